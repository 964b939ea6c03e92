"""What a supervisor talks to: health probes over HTTP and the systemd notify protocol."""
