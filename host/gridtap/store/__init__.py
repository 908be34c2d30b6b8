"""What the daemon keeps: counter epochs, RRDs, the durable upload spool and the live window."""
