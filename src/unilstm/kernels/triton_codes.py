"""The codes of ONNX's parametric activations (:class:`unilstm.activations.ParametricActivation`) in the
Triton kernels, by kind: after the ids of :mod:`unilstm.kernels.activation_ids`, which the compiled C cell
shares. Its own module (importing nothing) so that :mod:`~unilstm.kernels.triton_cell` and the kernels'
modules, which it imports on first use, both take the table from here."""

PARAMETRIC_CODES: dict[str, int] = {
    kind: 64 + k for k, kind in enumerate(
        ("affine", "leaky_relu", "thresholded_relu", "scaled_tanh", "hard_sigmoid", "elu")
    )
}
