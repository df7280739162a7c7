"""Media sources built into fanout.

:mod:`fanout.sources.testsource` is the test source process; the server starts
it with ``testsource_command`` from there. (This package imports nothing, so
that ``python -m fanout.sources.testsource`` runs the module only once.) The
packetizers it uses, :mod:`~fanout.sources.vp8`, :mod:`~fanout.sources.h264`
and :mod:`~fanout.sources.opus`, and their depacketizers are sans-IO.
"""
