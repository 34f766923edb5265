"""The Venus edge: the only package that touches D-Bus and velib_python.

* :mod:`driver.venus.velib` resolves velib_python (``$VELIB_PYTHON``, the GX's copy, or the
  project's stand-in) and logs which one is used;
* :mod:`driver.venus.dbusconn` connections (one private connection per published service) and
  the main-loop thread rule;
* :mod:`driver.venus.settings` live, validated settings from the schema, device instances;
* :mod:`driver.venus.service` two-phase service registration;
* :mod:`driver.venus.mainloop` the process main loop with signal handling.
"""
