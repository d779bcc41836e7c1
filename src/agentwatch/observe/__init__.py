"""What the gateway tells operators about its traffic: access log lines and traces."""
