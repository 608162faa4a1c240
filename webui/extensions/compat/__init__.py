"""A1111's extension API on our services.

`modules/` is a package named as A1111's, importable only while `webui/extensions/compat` is on
`sys.path` (the extension loader puts it there); our own code never imports it. `binding.py` holds
the live services those modules read (`bind(services, manager)`, called by the loader first), and
`launch.py` is A1111's `launch` module for extensions' `install.py` files.
"""
