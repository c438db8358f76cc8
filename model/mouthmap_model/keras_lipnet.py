"""A Keras LipNet in the layout of the widely used Keras implementations
(rizkiarm/LipNet and the tutorials built on it): input [T, H, W, C] video,
three 3D-convolution blocks (zero padding, Conv3D, batch norm, ReLU, spatial
max pooling), a flatten per frame, two bidirectional GRUs, and a softmax over
the alphabet plus the CTC blank (last, as Keras' `ctc_batch_cost` has it).

It exists so the importer (`keras_import`) is tested on the real thing a
user brings: `python -m mouthmap_model.keras_lipnet --out lipnet.h5` writes
one with random weights (`--small` for a narrow one that converts in
seconds). Needs TensorFlow (`scripts/install-deps` puts it in
.stack/interop-venv).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(frames: int = 75, height: int = 50, width: int = 100, channels: int = 3,
          classes: int = 28, filters: tuple[int, int, int] = (32, 64, 96), gru: int = 256):
    import keras
    from keras import layers as L

    inp = keras.Input((frames, height, width, channels), name="the_input")
    x = inp
    for i, f in enumerate(filters):
        x = L.ZeroPadding3D((1, 2, 2), name=f"zero{i + 1}")(x)
        x = L.Conv3D(f, (3, 5, 5) if i < 2 else (3, 3, 3), strides=(1, 2, 2) if i == 0 else (1, 1, 1),
                     kernel_initializer="he_normal", name=f"conv{i + 1}")(x)
        x = L.BatchNormalization(name=f"batc{i + 1}")(x)
        x = L.Activation("relu", name=f"actv{i + 1}")(x)
        x = L.MaxPooling3D((1, 2, 2), strides=(1, 2, 2), name=f"max{i + 1}")(x)
    x = L.TimeDistributed(L.Flatten(), name="time_distributed")(x)
    for i in range(2):
        x = L.Bidirectional(L.GRU(gru, return_sequences=True, kernel_initializer="orthogonal"),
                            merge_mode="concat", name=f"bi_gru{i + 1}")(x)
    x = L.Dense(classes, kernel_initializer="he_normal", name="dense1")(x)
    out = L.Activation("softmax", name="softmax")(x)
    return keras.Model(inp, out, name="lipnet")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the .h5 file to write")
    p.add_argument("--small", action="store_true", help="narrow layers (8/16/16 filters, GRU 32): converts in seconds")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import keras

    keras.utils.set_random_seed(a.seed)
    m = build(filters=(8, 16, 16), gru=32) if a.small else build()
    m.save(a.out)
    print(f"{a.out}: input {m.input_shape}, output {m.output_shape}, {m.count_params()} parameters")


if __name__ == "__main__":
    main()
