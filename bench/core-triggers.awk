# The core DDL's row trigger functions (settings_stamp, settings_notify) and
# their triggers out of the whole schema DDL of schema "sm" (`setcache
# --schema sm --channel sm schema`): the first of each (the managed DDL
# replaces them further down). Used by managed-server.sh and
# managed-instructions.sh for the write without validation and history.
/^CREATE OR REPLACE FUNCTION "sm".settings_(stamp|notify)\(\)/ && !seen[$5]++ { on = 1 }
on { print }
on && /^\$fn\$;$/ { on = 0; print "" }
/^DROP TRIGGER IF EXISTS settings_(stamp|notify) / && !trig[$5]++ { t = 1 }
t { print }
t && /EXECUTE FUNCTION/ { t = 0 }
