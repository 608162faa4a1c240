"""Start the web UI: `python launch.py [--flags]` (A1111-spelled flags; --help lists them)."""
import os
import time

os.environ.setdefault("WEBUI_T0", str(time.time()))

if __name__ == "__main__":
    from webui.app import main
    main()
