"""
The SSH manhole and the helpers in its namespace.  It reads the daemon's
objects through the namespace it is handed; imports no other part of hlfs.
"""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# conch's SSH transport names the Blowfish and CAST5 ciphers as it is
# imported, and the cryptography library of Debian 12 and later deprecates
# them: four warning lines at every start of the daemon, manhole or not.
warnings.filterwarnings(
    "ignore", category=CryptographyDeprecationWarning, module=r"twisted\.conch\."
)
