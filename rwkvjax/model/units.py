"""Units of the figures every part reports: code lengths are computed in nats and reported in bits."""

from __future__ import annotations

import math

LN2 = math.log(2.0)  # nats per bit: bits = nats / LN2
