"""Extensions in A1111's layout: discovery and enable state (discovery.py), loading (loader.py), git
installs and updates (git.py), and the `modules.*` names A1111 extensions import (compat/)."""
