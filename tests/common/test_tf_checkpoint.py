"""Tests for common/tf_checkpoint.py against checkpoints that TensorFlow wrote; TF is not needed.

The fixtures and their expected values come from tests/fixtures/tf_checkpoint/make_fixtures.py.
"""

import os
import pathlib
import shutil

import numpy as np
import pytest

from common import tf_checkpoint
from common.errors import UserError

FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'tf_checkpoint')
TF1_PREFIX = os.path.join(FIXTURES, 'tf1', 'model.ckpt-7')
PIANONET = '/work/shared/models/pianonet_original'
R5P3 = os.path.join(PIANONET, 'r5p3_300kparams_4_blocks_12_12_12_12_model')
needs_pianonet = pytest.mark.skipif(not os.path.isdir(R5P3), reason=f'{R5P3} is absent')


def _expected(name: str) -> dict:
  with np.load(os.path.join(FIXTURES, f'{name}_expected.npz')) as npz:
    return {key: npz[key] for key in npz.files}


def _mask(crc: int) -> int:
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize('name', ['tf1', 'tf2', 'keras'])
def test_values_equal_what_tensorflow_reads(name):
  values = tf_checkpoint.read_checkpoint(os.path.join(FIXTURES, name))
  expected = _expected(name)
  assert sorted(values) == sorted(expected)
  for key, value in expected.items():
    assert values[key].shape == value.shape, key
    if key == 'bf16':  # npz cannot hold bfloat16; the fixture stores it as float32
      assert values[key].dtype.name == 'bfloat16'
    else:
      assert values[key].dtype == value.dtype, key
    np.testing.assert_array_equal(values[key].astype(value.dtype), value, err_msg=key)


def test_tf1_known_values():
  values = tf_checkpoint.read_checkpoint(TF1_PREFIX)
  np.testing.assert_array_equal(values['weights'], np.arange(24).reshape(2, 3, 4) / 8 - 1)
  assert values['scalar'].shape == () and values['scalar'] == 3.25
  assert values['step'].dtype == np.int64 and values['step'] == 2**40 + 7
  assert values['flags'].tolist() == [True, False, True]
  assert values['counts'].tolist() == [-3, 0, 2**31 - 1]
  # Saved as 3 slices, each its own index entry; it comes back whole.
  np.testing.assert_array_equal(values['scope/partitioned'], np.arange(24).reshape(6, 4) * 10)
  assert values['weights'].flags.writeable


@pytest.mark.parametrize('name', ['tf1', 'tf2', 'keras'])
def test_list_variables_matches_data_and_names_skipped_strings(name):
  path = os.path.join(FIXTURES, name)
  variables = tf_checkpoint.list_variables(path)
  values = tf_checkpoint.read_checkpoint(path)
  skipped = {key for key, (_, dtype) in variables.items() if isinstance(dtype, str)}
  assert skipped == ({'text'} if name == 'tf1' else {'_CHECKPOINTABLE_OBJECT_GRAPH'})
  assert variables['text' if name == 'tf1' else '_CHECKPOINTABLE_OBJECT_GRAPH'] == ((), 'string')
  assert set(variables) - skipped == set(values)
  for key, value in values.items():
    assert variables[key] == (value.shape, value.dtype), key


def test_path_forms_read_the_same_checkpoint(tmp_path):
  expected = tf_checkpoint.read_checkpoint(TF1_PREFIX)
  keras = tf_checkpoint.read_checkpoint(os.path.join(FIXTURES, 'keras'))
  for path in [TF1_PREFIX + '.index', os.path.join(FIXTURES, 'tf1')]:
    assert tf_checkpoint.read_checkpoint(path).keys() == expected.keys()
  for path in [os.path.join(FIXTURES, 'keras', 'variables', 'variables'),
               os.path.join(FIXTURES, 'keras', 'variables')]:
    assert tf_checkpoint.read_checkpoint(path).keys() == keras.keys()
  # TF1 `checkpoint` files often hold an absolute path from the training machine.
  copy = tmp_path / 'train'
  shutil.copytree(os.path.join(FIXTURES, 'tf1'), copy)
  (copy / 'checkpoint').write_text('model_checkpoint_path: "/gone/train/model.ckpt-7"\n')
  np.testing.assert_array_equal(tf_checkpoint.read_checkpoint(str(copy))['weights'],
                                expected['weights'])


def test_crc32c_matches_the_byte_loop():
  assert tf_checkpoint._crc32c(b'123456789') == 0xE3069283  # the standard check value
  rng = np.random.default_rng(0)
  for size in [0, 3, 4095, 4096, 4099, 70001]:
    data = rng.integers(0, 256, size, np.uint8).tobytes()
    crc = 0xFFFFFFFF
    for byte in data:
      crc = tf_checkpoint._CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    assert tf_checkpoint._crc32c(data) == crc ^ 0xFFFFFFFF, size


def test_slice_key_decodes_ordered_code_numbers():
  # OrderedCode's own examples: 0x424242 -> f0 42 42 42, -0x800 -> 38 00; -1 (full extent) -> 7f.
  key = b'\0' + b'a/b' + b'\0\1' + b'\1\2' + b'\xf0\x42\x42\x42' + b'\x7f' + b'\x38\x00' + b'\x84'
  assert tf_checkpoint._slice_key_starts(key) == (b'a/b', [0x424242, -0x800])


def _copy_tf1(tmp_path) -> str:
  for name in os.listdir(os.path.join(FIXTURES, 'tf1')):
    shutil.copy(os.path.join(FIXTURES, 'tf1', name), tmp_path / name)
  return str(tmp_path / 'model.ckpt-7')


def test_missing_checkpoint_names_the_file(tmp_path):
  with pytest.raises(UserError, match=r'nope\.index: cannot read'):
    tf_checkpoint.read_checkpoint(str(tmp_path / 'nope'))
  with pytest.raises(UserError, match='no TensorFlow checkpoint here'):
    tf_checkpoint.list_variables(str(tmp_path))
  (tmp_path / 'checkpoint').write_text('all_model_checkpoint_paths: "x"\n')
  with pytest.raises(UserError, match='checkpoint: no model_checkpoint_path'):
    tf_checkpoint.read_checkpoint(str(tmp_path))


def test_garbage_and_truncated_index(tmp_path):
  (tmp_path / 'junk.index').write_bytes(b'PK\3\4 this is a zip file, not a checkpoint' * 3)
  with pytest.raises(UserError, match=r'junk\.index: not a TensorFlow checkpoint index'):
    tf_checkpoint.read_checkpoint(str(tmp_path / 'junk'))
  prefix = _copy_tf1(tmp_path)
  index = pathlib.Path(prefix + '.index').read_bytes()
  pathlib.Path(prefix + '.index').write_bytes(index[:-10])
  with pytest.raises(UserError, match=r'model\.ckpt-7\.index: not a TensorFlow checkpoint index'):
    tf_checkpoint.list_variables(prefix)
  # A flipped byte inside a block: the block's crc32c catches it.
  pathlib.Path(prefix + '.index').write_bytes(index[:20] + bytes([index[20] ^ 1]) + index[21:])
  with pytest.raises(UserError, match='block checksum mismatch'):
    tf_checkpoint.list_variables(prefix)


def _edit_first_block(prefix: str, edit) -> None:
  """Calls edit(block) on the index's first data block plus its trailer (a bytearray), then
  makes the block's crc32c match again, so that the reader gets past the checksum."""
  index = bytearray(pathlib.Path(prefix + '.index').read_bytes())
  footer = bytes(index[-48:])
  _, pos = tf_checkpoint._varint(footer, tf_checkpoint._varint(footer, 0)[1])  # metaindex handle
  index_block = tf_checkpoint._read_block(bytes(index), footer[pos:], prefix)
  first_handle = next(tf_checkpoint._block_entries(index_block))[1]
  size = tf_checkpoint._varint(first_handle, 1)[0]  # the first data block starts at 0
  block = index[:size + 1]
  edit(block)
  index[:size + 1] = block
  index[size + 1:size + 5] = _mask(tf_checkpoint._crc32c(block)).to_bytes(4, 'little')
  pathlib.Path(prefix + '.index').write_bytes(index)


def test_snappy_block_is_refused_clearly(tmp_path):
  prefix = _copy_tf1(tmp_path)

  def snappy(block):
    block[-1] = 1  # the compression type in the block trailer

  _edit_first_block(prefix, snappy)
  with pytest.raises(UserError, match='snappy-compressed checkpoint index'):
    tf_checkpoint.read_checkpoint(prefix)


def test_newer_bundle_format_is_refused(tmp_path):
  prefix = _copy_tf1(tmp_path)

  def min_consumer_2(block):
    # The header is the first record: key '', then num_shards 1 and version {producer 1}.
    assert block[:9] == b'\0\0\6\x08\1\x1a\2\x08\1'
    block[7:9] = b'\x10\2'  # version {min_consumer 2}

  _edit_first_block(prefix, min_consumer_2)
  with pytest.raises(UserError, match='written by a newer TensorFlow'):
    tf_checkpoint.read_checkpoint(prefix)


def test_bad_data_shard(tmp_path):
  prefix = _copy_tf1(tmp_path)
  shard = prefix + '.data-00000-of-00001'
  data = pathlib.Path(shard).read_bytes()
  pathlib.Path(shard).write_bytes(data[:-40])
  with pytest.raises(UserError, match=r'data-00000-of-00001: truncated: \w+ needs bytes up to'):
    tf_checkpoint.read_checkpoint(prefix)
  pathlib.Path(shard).write_bytes(data[:-1] + bytes([data[-1] ^ 0x40]))  # corrupt the last tensor
  with pytest.raises(UserError, match='data-00000-of-00001: corrupt: the bytes of .* checksum'):
    tf_checkpoint.read_checkpoint(prefix)
  assert len(tf_checkpoint.read_checkpoint(prefix, verify=False)) == 9
  os.remove(shard)
  with pytest.raises(UserError, match='data-00000-of-00001: cannot read checkpoint data'):
    tf_checkpoint.read_checkpoint(prefix)
  assert 'weights' in tf_checkpoint.list_variables(prefix)  # needs no data


@needs_pianonet
def test_pianonet_savedmodel_matches_tensorflow():
  """Reference values from tf.train.load_checkpoint (TF 2.15.1), which agreed on every tensor."""
  variables = tf_checkpoint.list_variables(R5P3)
  values = tf_checkpoint.read_checkpoint(R5P3)
  assert len(values) == 301 and sum(v.size for v in values.values()) == 948424
  assert set(variables) - set(values) == {'_CHECKPOINTABLE_OBJECT_GRAPH'}
  for key, value in values.items():
    assert variables[key] == (value.shape, value.dtype), key
  kernel = values['layer_with_weights-47/kernel/.ATTRIBUTES/VARIABLE_VALUE']
  assert kernel.shape == (2, 96, 98) and kernel.dtype == np.float32
  assert kernel.astype(np.float64).sum() == pytest.approx(-70.77886460611398, rel=1e-12)
  assert kernel.ravel()[:3].tolist() == [
      -0.17258776724338531, -0.05767348036170006, 0.06915824860334396]
  first = values['layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE']
  assert first.shape == (2, 1, 4)
  assert first.astype(np.float64).sum() == pytest.approx(0.43412381247617304, rel=1e-12)
  assert first.ravel()[:3].tolist() == [0.32338041067123413, 0.5697535276412964,
                                        -0.47214391827583313]
  assert values['optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE'] == 500


@needs_pianonet
def test_pianonet_two_shards():
  values = tf_checkpoint.read_checkpoint(os.path.join(PIANONET, 'micro_1'))
  assert len(values) == 229 and sum(v.size for v in values.values()) == 516916
