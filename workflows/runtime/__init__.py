"""Everything that imports Ray: the cluster, launching runs and trials, the loop's Ray session,
run checkpoints, the search and the final stage."""
