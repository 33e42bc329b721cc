"""
The SSH manhole and the helpers in its namespace.  It reads the daemon's
objects through the namespace it is handed; imports no other part of hlfs.
"""
