"""
The SSH manhole and the helpers in its namespace.  It reads the daemon's
objects through the namespace it is handed; imports no other part of hlfs.
"""

import warnings

# conch's SSH code names ciphers and key types that the cryptography library
# of Debian 12 and later deprecates: warning lines at every start of a
# daemon with a manhole.  Those warnings are
# UserWarnings (CryptographyDeprecationWarning), filtered by that base:
# importing their own class would load the cryptography library into every
# daemon, manhole or not.
warnings.filterwarnings("ignore", category=UserWarning, module=r"twisted\.conch\.")
