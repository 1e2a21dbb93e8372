"""fastreplay.reference: the pure-Python baseline, through the same adapter as fastreplay."""
from . import lib_fastreplay

lib_fastreplay.REFERENCE = True
info = lib_fastreplay.info
Adapter = lib_fastreplay.Adapter
