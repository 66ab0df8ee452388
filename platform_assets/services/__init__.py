"""The services deployment on one machine: start, check and stop its processes; its demo."""
