# sysmon: every daemon enabled in sysmon.ini, as one twistd application.
#
#     twistd -ny conf/sysmon.tac              (in the foreground, logging to stdout)
#     SYSMON_INI=/etc/sysmon/sysmon.ini twistd -y /etc/sysmon/sysmon.tac
#
# The ini file is $SYSMON_INI, else sysmon.ini next to this file.  Each
# [daemon] section holds that daemon's command-line options; see the
# comments in sysmon.ini and sysmon.ops.app.
import os

from sysmon.ops.app import load

application = load(
    os.environ.get("SYSMON_INI")
    or os.path.join(os.path.dirname(os.path.abspath(__file__)), "sysmon.ini")
)
