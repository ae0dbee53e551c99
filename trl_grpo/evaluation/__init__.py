"""The evaluation command behind eval.py: its pipeline from resolved settings to a summary."""
