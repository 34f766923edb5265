"""Configuration of the private ``dbus-daemon`` used off the GX (demo, tests, benchmarks).

A session-type bus on a unix socket in a temporary directory, open to every connection of this
user (the Venus system bus lets root do anything too), with limits raised for the benchmarks'
many connections and match rules.
"""

DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_replies_per_connection">50000</limit>
  <limit name="max_connections_per_user">2000</limit>
  <limit name="max_match_rules_per_connection">50000</limit>
</busconfig>
"""
