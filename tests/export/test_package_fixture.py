"""The `tiny_package` fixture other parts test against is a real, loadable package."""

from encoder_serve.package import load_package


def test_tiny_package_loads_with_both_precisions_servable(tiny_package):
    package = load_package(tiny_package)
    assert package.ref == "emotion-tiny@0.0.1"
    assert package.labels == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert package.model_path("fp32").is_file()
    assert package.model_path("int8").is_file()
    assert package.precision("int8").batch_invariant is True
