"""The kubeforge API: pydantic models of every CRD, the single source of truth for the CRD schemas."""

GROUP = "kubeforge.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
