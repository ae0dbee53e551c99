"""Settings: the flag table, recipe files, every check before a load, and the TRL configs they become."""
