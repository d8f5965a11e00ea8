import signal

# The listener takes SIGTERM / SIGINT with sigwait (cli.main), so they must be blocked in
# every thread; block them before the imports, because importing numpy (through pydicom)
# starts OpenBLAS threads that would otherwise take a SIGTERM arriving before the main thread
# waits for it, and die with it, undrained.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})

from pacs.cli import main  # noqa: E402

raise SystemExit(main())
