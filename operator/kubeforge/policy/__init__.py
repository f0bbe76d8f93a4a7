"""Pure decisions: no I/O, no clocks read implicitly, no Kubernetes client."""
