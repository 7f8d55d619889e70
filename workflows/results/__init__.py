"""What a search leaves on disk: the trials table, the report, exported configs. No Ray."""
