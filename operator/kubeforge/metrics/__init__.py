"""The operator's own Prometheus metrics, and the PromQL source the autoscaler and rollouts read."""
