"""numpy <-> Tensor conversions, Tensor properties, clone and reshape."""

import numpy as np
import pytest

import pyflame_rt as rt

DTYPES = [
    (np.float32, rt.DType.Float32),
    (np.float64, rt.DType.Float64),
    (np.float16, rt.DType.Float16),
    (np.int64, rt.DType.Int64),
    (np.int32, rt.DType.Int32),
    (np.int16, rt.DType.Int16),
    (np.int8, rt.DType.Int8),
    (np.uint8, rt.DType.UInt8),
    (np.bool_, rt.DType.Bool),
]


def sample(np_dtype, shape=(2, 3, 4)):
    rng = np.random.default_rng(42)
    if np_dtype is np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=np_dtype)
    return (rng.standard_normal(shape) * 100).astype(np_dtype)


@pytest.mark.parametrize("np_dtype,dtype", DTYPES)
def test_round_trip_every_dtype(np_dtype, dtype):
    a = sample(np_dtype)
    t = rt.from_numpy(a)
    assert t.dtype is dtype
    assert t.shape == [2, 3, 4]
    assert t.ndim == 3
    assert t.num_elements == 24
    assert t.size_bytes == 24 * a.itemsize
    assert t.owns_data
    for b in (rt.to_numpy(t), t.numpy(), np.asarray(t)):
        assert b.dtype == a.dtype
        assert b.shape == a.shape
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("np_dtype,dtype", DTYPES)
def test_round_trip_empty_and_scalar(np_dtype, dtype):
    empty = np.zeros((0, 5), dtype=np_dtype)
    t = rt.from_numpy(empty)
    assert t.shape == [0, 5] and t.num_elements == 0 and t.dtype is dtype
    assert rt.to_numpy(t).shape == (0, 5)

    scalar = np.array(7, dtype=np_dtype)
    t = rt.from_numpy(scalar)
    assert t.shape == [] and t.ndim == 0 and t.num_elements == 1
    back = rt.to_numpy(t)
    assert back.shape == () and back.dtype == scalar.dtype and back == scalar


def test_bfloat16_round_trip():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = np.array([[1.0, -2.5, 3.25], [0.0, 1e10, -1e-3]], dtype=ml_dtypes.bfloat16)
    t = rt.from_numpy(a)
    assert t.dtype is rt.DType.BFloat16
    assert t.size_bytes == 12
    b = rt.to_numpy(t)
    assert b.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(b.view(np.uint16), a.view(np.uint16))
    assert rt.numpy_dtype(rt.DType.BFloat16) == ml_dtypes.bfloat16


@pytest.mark.parametrize("bad", [
    np.zeros(3, dtype="datetime64[s]"),
    np.zeros(3, dtype="timedelta64[s]"),
    np.zeros(3, dtype=np.longdouble),
    np.zeros(3, dtype=[("a", np.int32), ("b", np.float32)]),
])
def test_unsupported_dtype_names_it(bad):
    with pytest.raises(rt.ValidationError, match=bad.dtype.name.split("[")[0]):
        rt.from_numpy(bad)


def test_object_array_of_non_strings_is_refused():
    with pytest.raises(rt.ValidationError, match="not str or bytes"):
        rt.from_numpy(np.array([object(), object()], dtype=object))


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.uint16).reshape(2, 3),
    np.array([0, 2**32 - 1], dtype=np.uint32),
    np.array([0, 2**64 - 1], dtype=np.uint64),
    np.array([1 + 2j, -3.5j], dtype=np.complex64),
    np.array([[1 + 2j], [-3.5j]], dtype=np.complex128),
])
def test_appended_numeric_dtypes_round_trip(array):
    back = rt.to_numpy(rt.from_numpy(array))
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_string_tensors_round_trip():
    words = np.array([["alpha", "béta"], ["", "x" * 300]])
    t = rt.from_numpy(words)
    assert t.dtype == rt.DType.String and t.shape == [2, 2]
    back = rt.to_numpy(t)
    assert back.dtype == object
    assert back.tolist() == words.tolist()
    assert rt.to_numpy(rt.from_numpy(np.array([b"raw", b"bytes"], dtype=object))).tolist() == ["raw", "bytes"]


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "int4", "uint4", "bfloat16"])
def test_ml_dtypes_round_trip(name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dt = getattr(ml_dtypes, name)
    array = np.array([0, 1, 2, 3, 7, -1 if "uint" not in name else 5], dtype=np.float32).astype(dt)
    back = rt.to_numpy(rt.from_numpy(array))
    assert back.dtype == np.dtype(dt)
    np.testing.assert_array_equal(back.astype(np.float32), array.astype(np.float32))


def test_from_numpy_copies():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = rt.from_numpy(a)
    a[0, 0] = 100
    assert rt.to_numpy(t)[0, 0] == 0
    out = t.numpy()
    out[1, 1] = -1
    assert t.numpy()[1, 1] == 4  # numpy() is a copy


def test_from_numpy_array_likes():
    t = rt.from_numpy([[1, 2], [3, 4]])
    assert t.dtype is rt.DType.Int64 and t.shape == [2, 2]
    t = rt.from_numpy(3.5)
    assert t.dtype is rt.DType.Float64 and t.shape == []
    t = rt.Tensor(np.ones((2, 2), np.int8))
    assert t.dtype is rt.DType.Int8


def test_non_contiguous_and_big_endian():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    strided = base[::2, 1::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(rt.to_numpy(rt.from_numpy(strided)), strided)
    fortran = np.asfortranarray(base)
    np.testing.assert_array_equal(rt.to_numpy(rt.from_numpy(fortran)), base)

    be = np.arange(6, dtype=">i4")
    t = rt.from_numpy(be)
    assert t.dtype is rt.DType.Int32
    np.testing.assert_array_equal(rt.to_numpy(t), np.arange(6))


def test_tensor_repr_and_len():
    t = rt.from_numpy(np.zeros((2, 3), np.float32))
    assert repr(t) == "Tensor(shape=[2, 3], dtype=DType.Float32)"
    assert len(t) == 2


def test_clone_is_deep():
    t = rt.from_numpy(np.arange(4, dtype=np.int32))
    c = t.clone()
    assert c.data_ptr != t.data_ptr
    t.numpy(copy=False)[0] = 42
    assert c.numpy()[0] == 0
    np.testing.assert_array_equal(c.numpy(), [0, 1, 2, 3])


def test_numpy_view_shares_storage():
    t = rt.from_numpy(np.zeros((2, 2), np.float32))
    view = t.numpy(copy=False)
    view[1, 0] = 7.0
    assert t.numpy()[1, 0] == 7.0
    del t  # the array keeps the storage alive
    assert view[1, 0] == 7.0


def test_reshape_shares_data():
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    t = rt.from_numpy(a)
    r = t.reshape([3, 2])
    assert r.shape == [3, 2]
    assert t.shape == [2, 3]
    assert r.data_ptr == t.data_ptr
    np.testing.assert_array_equal(r.numpy(), a.reshape(3, 2))
    r.numpy(copy=False)[2, 1] = 60.0
    assert t.numpy()[1, 2] == 60.0


def test_reshape_infers_minus_one():
    t = rt.from_numpy(np.zeros((4, 6), np.int16))
    assert t.reshape([-1]).shape == [24]
    assert t.reshape((2, -1, 3)).shape == [2, 4, 3]


def test_reshape_mismatch_raises_validation_error():
    t = rt.from_numpy(np.zeros((2, 3), np.float32))
    with pytest.raises(rt.ValidationError):
        t.reshape([4, 2])
    with pytest.raises(rt.ValidationError):
        t.reshape([-1, -1])


def test_zeros():
    t = rt.Tensor.zeros([3, 2], rt.DType.Int64)
    assert t.dtype is rt.DType.Int64
    np.testing.assert_array_equal(t.numpy(), np.zeros((3, 2), np.int64))


def test_tensor_info_and_node_arg():
    info = rt.TensorInfo("x", rt.DType.Int32, [None, 3])
    assert info.name == "x" and info.dtype is rt.DType.Int32 and info.shape == [None, 3]
    info.shape = [1, "batch", -1]
    assert info.shape == [1, None, None]
    info.dtype = np.float16
    assert info.dtype is rt.DType.Float16
    assert rt.TensorInfo("x", rt.DType.Float16, [1, None, None]) == info

    arg = rt.NodeArg("y", rt.DType.Int64, [None])
    assert arg.type == "tensor(int64)"
    assert arg.shape == [None]
    assert rt.NodeArg("f", rt.DType.Float32, [2]).type == "tensor(float)"
