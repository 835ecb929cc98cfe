# The agent package: what an OTA image carries into a slot.
