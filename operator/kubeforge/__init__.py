"""kubeforge: a Kubernetes operator for AI workloads on GPU clusters."""

__version__ = "0.1.0"
