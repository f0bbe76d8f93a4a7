"""Controllers: each gathers a snapshot from the caches, calls its policy, and carries out the plan;
the shared runtime (work queue, workers, requeue-after) drives them."""
