"""The exit codes of every `switchyard` command (SPEC 2.1)."""

EXIT_OK = 0  # done
EXIT_REFUSED = 1  # invalid value, unhealthy target, conflict, a rollout that rolled back
EXIT_USAGE = 2  # bad arguments
EXIT_UNREACHABLE = 3  # the admin socket cannot be reached
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, what a shell reports for it
