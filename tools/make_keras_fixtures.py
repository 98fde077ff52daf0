"""Make the parity fixtures of ``unilstm.keras`` with real Keras.

Run with the reference environment (never a run-time dependency of unilstm)::

    python -m venv /work/refenv/tf && /work/refenv/tf/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0
    /work/refenv/tf/bin/python tools/make_keras_fixtures.py [out_dir]

``tf.keras`` is Keras 3 (3.15.1 here), ``tf_keras`` is Keras 2 (2.21). Every case is a small ``.npz`` in
``tests/fixtures/keras/`` (default out_dir) holding:

- ``config``: the layer's ``get_config()`` as JSON (``class_name`` in ``class_name``), ``keras``: "3" or "2";
- ``weights_<i>``: the layer's ``get_weights()`` (set to fixed random values, Keras layout);
- ``calls``: the number of calls; per call ``c<k>_x`` (input), optional ``c<k>_mask``, ``c<k>_state_<i>``
  (initial_state), ``c<k>_out_<i>`` (every output tensor, Keras's order), and optionally ``c<k>_reset``
  (1: ``reset_states()`` before the call);
- with gradients: ``c0_cot_<i>`` (fixed random cotangents, one per output), ``c0_grad_x``,
  ``c0_grad_state_<i>``, ``c0_grad_w_<i>`` from ``tf.GradientTape`` of ``sum_i <out_i, cot_i>``.

Also ``losses.npz`` / ``constraints.npz`` / ``initializers.npz`` (regularizer losses, constraint results and
deterministic initializer results) and ``configs.json`` (real configs of both Kerases).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from tensorflow import keras as keras3  # noqa: E402

OUT = (
    sys.argv[1]
    if len(sys.argv) > 1
    else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "keras")
)
B, T, F, H = 3, 5, 4, 3
RNG = np.random.default_rng(20261126)

# masks: row 0 has gaps, row 1 is left padded, row 2 is fully masked (B = 3)
GAP_MASK = np.array([[1, 0, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
RIGHT_MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=bool)


def rnd(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def set_random_weights(layer):
    layer.set_weights([rnd(*w.shape, scale=0.5) for w in layer.get_weights()])


def as_list(y):
    if isinstance(y, (list, tuple)):
        return list(y)
    return [y]


def save(name, data):
    path = os.path.join(OUT, name + ".npz")
    np.savez_compressed(path, **data)
    print("wrote", path)


def run_case(
    name,
    make_layer,
    calls,
    *,
    module=keras3,
    grads=False,
    keras="3",
    features=F,
    batch=B,
    steps=T,
    time_major=False,
):
    """calls: list of dicts with optional mask, state (bool: give a random initial_state), reset (bool),
    training (bool)."""
    layer = make_layer()
    shape = (steps, batch, features) if time_major else (batch, steps, features)
    layer.build(shape)
    set_random_weights(layer)
    data = {"config": json.dumps(layer.get_config()), "class_name": type(layer).__name__, "keras": keras}
    for i, w in enumerate(layer.get_weights()):
        data[f"weights_{i}"] = w
    data["calls"] = np.int64(len(calls))
    for k, call in enumerate(calls):
        if call.get("reset"):
            layer.reset_states()
            data[f"c{k}_reset"] = np.int64(1)
        x = rnd(*shape)
        data[f"c{k}_x"] = x
        kwargs = {}
        if call.get("mask") is not None:
            kwargs["mask"] = tf.constant(call["mask"])
            data[f"c{k}_mask"] = call["mask"]
        states = None
        if call.get("state"):
            n_states = call["state"]
            states = [rnd(batch, H) for _ in range(n_states)]
            for i, s in enumerate(states):
                data[f"c{k}_state_{i}"] = s
        x_t = tf.constant(x)
        state_t = [tf.constant(s) for s in states] if states else None
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x_t)
            if state_t:
                for s in state_t:
                    tape.watch(s)
            if state_t:
                kwargs["initial_state"] = state_t
            outs = as_list(layer(x_t, **kwargs))
            cots = [rnd(*o.shape) for o in outs]
            loss = tf.add_n([tf.reduce_sum(o * c) for o, c in zip(outs, cots, strict=False)])
        for i, o in enumerate(outs):
            data[f"c{k}_out_{i}"] = o.numpy()
        if grads and k == 0:
            for i, c in enumerate(cots):
                data[f"c0_cot_{i}"] = c
            data["c0_grad_x"] = tape.gradient(loss, x_t).numpy()
            if state_t:
                for i, g in enumerate(tape.gradient(loss, state_t)):
                    data[f"c0_grad_state_{i}"] = g.numpy()
            for i, g in enumerate(tape.gradient(loss, layer.trainable_weights)):
                data[f"c0_grad_w_{i}"] = g.numpy()
    save(name, data)


def lstm3(**kw):
    return lambda: keras3.layers.LSTM(H, **kw)


def lstm2(**kw):
    return lambda: tf_keras.layers.LSTM(H, **kw)


ACTIVATIONS = [
    "relu",
    "elu",
    "selu",
    "gelu",
    "softplus",
    "softsign",
    "swish",
    "silu",
    "leaky_relu",
    "mish",
    "hard_silu",
    "hard_swish",
    "relu6",
    "sparse_plus",
    "squareplus",
    "soft_shrink",
    "hard_shrink",
    "tanh_shrink",
    "hard_tanh",
    "log_sigmoid",
    "celu",
    "exponential",
    "softmax",
    "log_softmax",
    "sparse_sigmoid",
    "sparsemax",
    "hard_sigmoid",
    "sigmoid",
    "linear",
    None,
]
RECURRENT_ACTIVATIONS = ["hard_sigmoid", "sparse_sigmoid", "softsign", "tanh", "relu6", "hard_silu", "linear"]


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    one = [{}]
    # -- Keras 3 layer ------------------------------------------------------------------------------
    run_case("k3_basic_seq", lstm3(return_sequences=True), one, grads=True)
    run_case("k3_basic_last", lstm3(), one, grads=True)
    run_case("k3_state_seq", lstm3(return_sequences=True, return_state=True), [{"state": 2}], grads=True)
    run_case("k3_state_last", lstm3(return_state=True), [{"state": 2}], grads=True)
    run_case(
        "k3_nobias",
        lstm3(use_bias=False, return_sequences=True, return_state=True),
        [{"state": 2}],
        grads=True,
    )
    run_case(
        "k3_mask_gaps_seq",
        lstm3(return_sequences=True, return_state=True),
        [{"mask": GAP_MASK, "state": 2}],
        grads=True,
    )
    run_case("k3_mask_gaps_last", lstm3(return_state=True), [{"mask": GAP_MASK, "state": 2}], grads=True)
    run_case(
        "k3_mask_zero_output",
        lstm3(return_sequences=True, return_state=True, zero_output_for_mask=True),
        [{"mask": GAP_MASK, "state": 2}],
        grads=True,
    )
    run_case(
        "k3_mask_zero_output_last",
        lstm3(return_state=True, zero_output_for_mask=True),
        [{"mask": RIGHT_MASK}],
        grads=True,
    )
    run_case(
        "k3_mask_right", lstm3(return_sequences=True, return_state=True), [{"mask": RIGHT_MASK}], grads=True
    )
    run_case(
        "k3_backwards",
        lstm3(return_sequences=True, return_state=True, go_backwards=True),
        [{"state": 2}],
        grads=True,
    )
    run_case(
        "k3_backwards_mask",
        lstm3(return_sequences=True, return_state=True, go_backwards=True),
        [{"mask": GAP_MASK, "state": 2}],
        grads=True,
    )
    run_case("k3_backwards_mask_last", lstm3(return_state=True, go_backwards=True), [{"mask": GAP_MASK}])
    run_case("k3_unroll", lstm3(return_sequences=True, unroll=True), one)
    run_case(
        "k3_stateful",
        lstm3(return_sequences=True, return_state=True, stateful=True),
        [{}, {}, {"reset": True}, {}, {"state": 2}, {}],
    )
    run_case(
        "k3_stateful_mask",
        lstm3(return_state=True, stateful=True),
        [{"mask": GAP_MASK}, {"mask": RIGHT_MASK}],
    )
    for act in ACTIVATIONS:
        label = "none" if act is None else act
        run_case(
            f"k3_act_{label}",
            lstm3(activation=act, return_sequences=True, return_state=True),
            [{"state": 2}],
            grads=act in ("relu", "elu", "gelu", "softmax", "sparsemax", None),
        )
    for act in RECURRENT_ACTIVATIONS:
        run_case(
            f"k3_ract_{act}",
            lstm3(recurrent_activation=act, return_sequences=True, return_state=True),
            [{"state": 2}],
            grads=act in ("hard_sigmoid", "softsign"),
        )
    run_case("k3_float64", lambda: keras3.layers.LSTM(H, return_sequences=True, dtype="float64"), one)
    # -- Bidirectional ------------------------------------------------------------------------------
    for mode in ("concat", "sum", "mul", "ave", None):
        label = "none" if mode is None else mode
        run_case(
            f"k3_bi_{label}_seq",
            lambda mode=mode: keras3.layers.Bidirectional(
                keras3.layers.LSTM(H, return_sequences=True), merge_mode=mode
            ),
            [{"mask": GAP_MASK}],
            grads=mode in ("concat", None),
        )
        run_case(
            f"k3_bi_{label}_state",
            lambda mode=mode: keras3.layers.Bidirectional(
                keras3.layers.LSTM(H, return_state=True), merge_mode=mode
            ),
            [{"state": 4}],
            grads=mode == "concat",
        )
    run_case(
        "k3_bi_state_seq_mask",
        lambda: keras3.layers.Bidirectional(keras3.layers.LSTM(H, return_state=True, return_sequences=True)),
        [{"mask": GAP_MASK, "state": 4}],
        grads=True,
    )
    run_case(
        "k3_bi_last_mask", lambda: keras3.layers.Bidirectional(keras3.layers.LSTM(H)), [{"mask": GAP_MASK}]
    )
    run_case(
        "k3_bi_backward_layer",
        lambda: keras3.layers.Bidirectional(
            keras3.layers.LSTM(H, return_sequences=True),
            backward_layer=keras3.layers.LSTM(H, return_sequences=True, go_backwards=True, activation="relu"),
        ),
        [{"mask": RIGHT_MASK}],
    )
    run_case(
        "k3_bi_stateful",
        lambda: keras3.layers.Bidirectional(keras3.layers.LSTM(H, return_sequences=True, stateful=True)),
        [{}, {}, {"reset": True}, {}],
    )
    # -- tf-keras (Keras 2) -------------------------------------------------------------------------
    run_case(
        "k2_basic_seq",
        lstm2(return_sequences=True, return_state=True),
        [{"state": 2}],
        module=tf_keras,
        keras="2",
        grads=True,
    )
    run_case(
        "k2_hard_sigmoid",
        lstm2(recurrent_activation="hard_sigmoid", return_sequences=True, return_state=True),
        [{"state": 2}],
        keras="2",
        grads=True,
    )
    run_case("k2_hard_sigmoid_act", lstm2(activation="hard_sigmoid", return_sequences=True), one, keras="2")
    run_case(
        "k2_time_major",
        lstm2(time_major=True, return_sequences=True, return_state=True),
        [{"state": 2}],
        keras="2",
        time_major=True,
        grads=True,
    )
    run_case(
        "k2_time_major_mask",
        lstm2(time_major=True, return_sequences=True, return_state=True),
        [{"mask": GAP_MASK.T.copy()}],
        keras="2",
        time_major=True,
    )
    run_case(
        "k2_mask_gaps",
        lstm2(return_sequences=True, return_state=True),
        [{"mask": GAP_MASK, "state": 2}],
        keras="2",
    )
    run_case(
        "k2_bi_concat",
        lambda: tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(H, return_sequences=True)),
        [{"mask": GAP_MASK}],
        keras="2",
    )
    losses_and_constraints()
    initializers()
    configs()


def losses_and_constraints() -> None:
    data = {}
    for tag, module in (("k3", keras3), ("k2", tf_keras)):
        regs = module.regularizers
        layer = module.layers.LSTM(
            H,
            return_sequences=True,
            return_state=True,
            kernel_regularizer=regs.L1L2(l1=0.01, l2=0.02),
            recurrent_regularizer="l2",
            bias_regularizer=regs.L1(0.3),
            activity_regularizer=regs.L2(0.05),
        )
        layer.build((B, T, F))
        set_random_weights(layer)
        x = rnd(B, T, F)
        layer(tf.constant(x))
        data[f"{tag}_x"] = x
        for i, w in enumerate(layer.get_weights()):
            data[f"{tag}_w_{i}"] = w
        data[f"{tag}_config"] = json.dumps(layer.get_config())
        data[f"{tag}_losses"] = np.array([float(v) for v in layer.losses], dtype=np.float64)
    # Bidirectional: the wrapper's activity losses (merged output and four states), then the layers'
    for tag, module in (("k3bi", keras3), ("k2bi", tf_keras)):
        layer = module.layers.Bidirectional(
            module.layers.LSTM(H, return_state=True, kernel_regularizer="l2", activity_regularizer="l1"),
            activity_regularizer=module.regularizers.L2(0.1),
        )
        layer.build((B, T, F))
        set_random_weights(layer)
        x = rnd(B, T, F)
        layer(tf.constant(x))
        data[f"{tag}_x"] = x
        for i, w in enumerate(layer.get_weights()):
            data[f"{tag}_w_{i}"] = w
        data[f"{tag}_config"] = json.dumps(layer.get_config())
        data[f"{tag}_losses"] = np.array([float(v) for v in layer.losses], dtype=np.float64)
    # string regularizers and OrthogonalRegularizer (Keras 3)
    w = rnd(F, 4 * H)
    data["reg_w"] = w
    names = {"l1": "l1", "l2": "l2", "l1l2": "l1l2"}
    for key, name in names.items():
        data[f"reg_{key}"] = np.float64(float(keras3.regularizers.get(name)(tf.constant(w))))
    data["reg_l1_l2_k2"] = np.float64(float(tf_keras.regularizers.get("l1_l2")(tf.constant(w))))
    data["reg_orth_rows"] = np.float64(
        float(keras3.regularizers.OrthogonalRegularizer(0.1, "rows")(tf.constant(w)))
    )
    data["reg_orth_cols"] = np.float64(
        float(keras3.regularizers.OrthogonalRegularizer(0.1, "columns")(tf.constant(w)))
    )
    save("losses", data)

    cons = {}
    kernel, bias = rnd(F, 4 * H, scale=2.0), rnd(4 * H, scale=2.0)
    cons["kernel"], cons["bias"] = kernel, bias
    made = {
        "max_norm": keras3.constraints.MaxNorm(1.5),
        "max_norm_axis1": keras3.constraints.MaxNorm(1.0, axis=1),
        "min_max_norm": keras3.constraints.MinMaxNorm(0.5, 1.2, rate=0.7),
        "non_neg": keras3.constraints.NonNeg(),
        "unit_norm": keras3.constraints.UnitNorm(),
    }
    for key, constraint in made.items():
        cons[f"{key}_kernel"] = constraint(tf.constant(kernel)).numpy()
        if key != "max_norm_axis1":  # axis 1 does not exist on a bias: Keras raises
            cons[f"{key}_bias"] = constraint(tf.constant(bias)).numpy()
        cons[f"{key}_config"] = json.dumps(keras3.constraints.serialize(constraint))
    # a constrained layer after one SGD step
    layer = keras3.layers.LSTM(
        H, kernel_constraint="max_norm", recurrent_constraint="unit_norm", bias_constraint="non_neg"
    )
    layer.build((B, T, F))
    set_random_weights(layer)
    cons["step_w_before"] = np.array(0)
    for i, w in enumerate(layer.get_weights()):
        cons[f"step_w0_{i}"] = w
    x = rnd(B, T, F)
    cons["step_x"] = x
    opt = keras3.optimizers.SGD(0.5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant(x)) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    opt.apply_gradients(zip(grads, layer.trainable_weights, strict=True))
    for i, w in enumerate(layer.get_weights()):
        cons[f"step_w1_{i}"] = w
    save("constraints", cons)

    # three SGD steps of a custom Keras 3 training loop: loss = <y, cot> + sum(layer.losses)
    train = {}
    layer = keras3.layers.LSTM(
        H, return_sequences=True, kernel_regularizer=keras3.regularizers.L1L2(0.01, 0.02),
        recurrent_regularizer="l2", activity_regularizer="l1",
        kernel_constraint=keras3.constraints.MaxNorm(1.0), bias_constraint="non_neg",
    )
    layer.build((B, T, F))
    set_random_weights(layer)
    for i, w in enumerate(layer.get_weights()):
        train[f"w0_{i}"] = w
    opt = keras3.optimizers.SGD(0.3)
    for step in range(3):
        x, mask, cot = rnd(B, T, F), RNG.random((B, T)) > 0.3, rnd(B, T, H)
        train[f"x_{step}"], train[f"mask_{step}"], train[f"cot_{step}"] = x, mask, cot
        with tf.GradientTape() as tape:
            y = layer(tf.constant(x), mask=tf.constant(mask), training=True)
            loss = tf.reduce_sum(y * cot) + tf.add_n(layer.losses)
        train[f"loss_{step}"] = np.float64(float(loss))
        grads = tape.gradient(loss, layer.trainable_weights)
        opt.apply_gradients(zip(grads, layer.trainable_weights, strict=True))
    for i, w in enumerate(layer.get_weights()):
        train[f"w3_{i}"] = w
    save("training", train)


def initializers() -> None:
    """Deterministic initializers and the unit_forget_bias structure."""
    data = {}
    for ufb in (True, False):
        for init in ("zeros", "ones", {"class_name": "Constant", "config": {"value": 0.5}}):
            layer = keras3.layers.LSTM(H, unit_forget_bias=ufb, bias_initializer=init)
            layer.build((B, T, F))
            label = init if isinstance(init, str) else "constant"
            data[f"bias_{label}_{int(ufb)}"] = layer.get_weights()[2]
    layer = keras3.layers.LSTM(
        H, kernel_initializer="identity", recurrent_initializer=keras3.initializers.Identity(2.0)
    )
    layer.build((B, T, F))
    data["identity_kernel"], data["identity_recurrent"] = layer.get_weights()[:2]
    layer = keras3.layers.LSTM(8)
    layer.build((B, T, 6))
    data["default_kernel"], data["default_recurrent"] = layer.get_weights()[:2]
    save("initializers", data)


def configs() -> None:
    result = {}
    for tag, module in (("k3", keras3), ("k2", tf_keras)):
        L = module.layers  # noqa: N806
        regs, cons, inits = module.regularizers, module.constraints, module.initializers
        cases = {
            "default": L.LSTM(4),
            "full": L.LSTM(
                3,
                activation="relu",
                recurrent_activation="hard_sigmoid",
                use_bias=True,
                kernel_initializer=inits.VarianceScaling(2.0, seed=3),
                recurrent_initializer=inits.Orthogonal(0.5),
                bias_initializer=inits.Constant(0.5),
                unit_forget_bias=False,
                kernel_regularizer=regs.l1_l2(0.01, 0.02),
                recurrent_regularizer="l2",
                bias_regularizer=regs.L1(0.1),
                activity_regularizer="l1",
                kernel_constraint=cons.MaxNorm(2.0),
                recurrent_constraint="unit_norm",
                bias_constraint=cons.MinMaxNorm(0.1, 0.9, 0.5),
                dropout=0.1,
                recurrent_dropout=0.2,
                return_sequences=True,
                return_state=True,
                go_backwards=True,
                stateful=True,
                unroll=True,
                name="full_lstm",
            ),
            "initializers": L.LSTM(
                2,
                kernel_initializer=inits.RandomNormal(0.1, 0.2, seed=1),
                recurrent_initializer=inits.TruncatedNormal(0.0, 0.3),
                bias_initializer=inits.RandomUniform(-1, 1),
            ),
            "initializers2": L.LSTM(
                2,
                kernel_initializer="he_uniform",
                recurrent_initializer="lecun_normal",
                bias_initializer="ones",
            ),
            "bidirectional": L.Bidirectional(L.LSTM(2, return_sequences=True), merge_mode="ave"),
            "bidirectional_backward": L.Bidirectional(
                L.LSTM(2),
                backward_layer=L.LSTM(2, go_backwards=True, activation="relu"),
                merge_mode=None,
            ),
        }
        if tag == "k3":
            cases["seeded"] = L.LSTM(2, seed=7, dropout=0.3, zero_output_for_mask=True)
            cases["orthogonal_regularizer"] = L.LSTM(
                2, kernel_regularizer=regs.OrthogonalRegularizer(0.1, "columns"), dtype="float64"
            )
        else:
            cases["time_major"] = L.LSTM(2, time_major=True, implementation=1)
        result[tag] = {
            key: {"class_name": type(v).__name__, "config": v.get_config()} for key, v in cases.items()
        }
    path = os.path.join(OUT, "configs.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1, sort_keys=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
