from setuptools import find_packages, setup

setup(
    name="asr_kd",
    version="0.1.0",
    description="Offline-to-streaming transducer ASR with adaptive two-stage knowledge distillation",
    packages=find_packages(include=["asr_kd", "asr_kd.*"]),
    python_requires=">=3.10",
    # torch is a range, never a pin: GPU machines bring their own build.
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "numba>=0.59",
        "lhotse>=1.24",
        "urllib3",  # lhotse imports it without declaring it
        "sentencepiece>=0.1.99",
        "kaldi-native-fbank>=1.19",
        "kaldialign>=0.9",
        "soundfile>=0.12",
        "lilcom>=1.7",  # lhotse feature storage compression
        "tqdm",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest>=7"],
        # ONNX export (TorchScript exporter: no onnxscript needed), int8 quantisation, sherpa-onnx runtime.
        # Tested: onnx 1.23.2, onnxruntime 1.32.0, sherpa-onnx 2.0.1 (docs/deploy.md). onnxruntime >= 1.20:
        # older wheels are built against numpy 1 and crash at import beside numpy 2 (1.16.3 seen).
        "export": ["onnx>=1.14", "onnxruntime>=1.20", "sherpa-onnx>=1.10"],
    },
)
