"""What deploys: container and service files, compose helpers, and `make demo` (on `testbed`)."""
