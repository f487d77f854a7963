"""Lightning modules: a shared base and one small file per method."""
