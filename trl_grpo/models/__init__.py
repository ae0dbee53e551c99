"""Models: finding and loading them (and their adapters), sampling from them, the device and precision."""
