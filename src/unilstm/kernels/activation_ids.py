"""The one numbering of the activations that the compiled kernels implement (the C cell of
:mod:`unilstm.kernels.native` and the Triton cell of :mod:`unilstm.kernels.triton_cell`).

Keys are names of :data:`unilstm.activations.REGISTRY`. setup.py executes this file (it imports nothing, so
the build needs no torch) and passes each id to the C compiler as ``ACT_<NAME>``; the built module exports
the table back as ``ACTIVATION_IDS`` and the native package refuses an extension built from another table.
The Triton kernels take their ``tl.constexpr`` codes from here.
"""

ACTIVATION_IDS: dict[str, int] = {
    "linear": 0,
    "tanh": 1,
    "sigmoid": 2,
    "relu": 3,
    "hard_sigmoid": 4,  # Keras 3: relu6(x + 3) / 6
    "hard_sigmoid_keras2": 5,  # clip(0.2 x + 0.5, 0, 1)
    "elu": 6,
    "selu": 7,
    "softsign": 8,
    "exponential": 9,
    "relu6": 10,
    "leaky_relu": 11,  # negative slope 0.2 (Keras's default)
    "hard_tanh": 12,
    "silu": 13,
    "softplus": 14,  # torch's: x where x > 20
}

#: ids run from 0 to ACTIVATION_COUNT - 1 (the C entry points check ids against it)
ACTIVATION_COUNT = len(ACTIVATION_IDS)


def compiler_macros() -> list[tuple[str, str]]:
    """The C compiler's macros for the table: ``ACT_<NAME>`` = id, ``ACT_COUNT``, and ``ACT_NAMES``, an
    X-macro list ``X(name,NAME) ...`` from which the C module builds its exported copy."""
    if sorted(ACTIVATION_IDS.values()) != list(range(ACTIVATION_COUNT)):
        raise ValueError("activation ids must be 0 .. ACTIVATION_COUNT - 1, each once")
    macros = [(f"ACT_{name.upper()}", str(code)) for name, code in ACTIVATION_IDS.items()]
    macros.append(("ACT_COUNT", str(ACTIVATION_COUNT)))
    macros.append(("ACT_NAMES", " ".join(f"X({name},{name.upper()})" for name in ACTIVATION_IDS)))
    return macros
