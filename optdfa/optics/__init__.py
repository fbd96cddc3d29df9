"""A physically modelled optical processing unit (OPU), one module per stage.

- :mod:`~optdfa.optics.profile` — hardware profiles (TOML, strict validation, overrides);
- :mod:`~optdfa.optics.dmd` — the binary input device (frames, macro-pixels);
- :mod:`~optdfa.optics.medium` — the element-wise seeded transmission matrix ``H``;
- :mod:`~optdfa.optics.camera` — switchable sensor stages in electrons and DN;
- :mod:`~optdfa.optics.device` — :class:`SimulatedOPU`, frames in → camera output out;
- :mod:`~optdfa.optics.encoders` — signed errors → binary frames;
- :mod:`~optdfa.optics.decoders` — intensities → a linear projection (reference field).

See ``docs/physics-model.md`` for the equations and units.
"""

from optdfa.optics.camera import (
    ADC,
    Camera,
    DarkCurrent,
    FullWell,
    PhotoConversion,
    ReadNoise,
    ShotNoise,
    Stage,
)
from optdfa.optics.decoders import (
    IdealLinearDecoder,
    LinearDecoder,
    ReferenceDecoder,
    make_decoder,
    unique_frames,
)
from optdfa.optics.device import OpticalDevice, SimulatedOPU
from optdfa.optics.dmd import DMD
from optdfa.optics.encoders import (
    BitPlaneEncoder,
    Encoder,
    Encoding,
    StochasticTernaryEncoder,
    TernaryEncoder,
    parse_encoder,
)
from optdfa.optics.medium import FIELD_PER_LSB, ROW_BLOCK, TransmissionMatrix
from optdfa.optics.profile import (
    FIELDS,
    OpuProfile,
    available_profiles,
    load_profile,
    profile_from_dict,
)

__all__ = [
    "ADC",
    "DMD",
    "FIELDS",
    "FIELD_PER_LSB",
    "ROW_BLOCK",
    "BitPlaneEncoder",
    "Camera",
    "DarkCurrent",
    "Encoder",
    "Encoding",
    "FullWell",
    "IdealLinearDecoder",
    "LinearDecoder",
    "OpticalDevice",
    "OpuProfile",
    "PhotoConversion",
    "ReadNoise",
    "ReferenceDecoder",
    "ShotNoise",
    "SimulatedOPU",
    "Stage",
    "StochasticTernaryEncoder",
    "TernaryEncoder",
    "TransmissionMatrix",
    "available_profiles",
    "load_profile",
    "make_decoder",
    "parse_encoder",
    "profile_from_dict",
    "unique_frames",
]
