"""Simulated SMA Sunny Island on the loopback CAN link (``python -m sim.sma``).

:mod:`sim.sma.model` is the plant (pure); :mod:`sim.sma.__main__` runs it on a CAN channel;
:mod:`sim.sma.battery` publishes a simulated ``com.victronenergy.battery`` service that mirrors
the simulator's battery (from its 0x305 frames), for tests and the demo.
"""
