"""Reads TensorFlow's V2 checkpoints ("tensor bundles") into numpy arrays, without TensorFlow.

A checkpoint prefix P is an index file P.index plus data shards P.data-00000-of-0000N. The index
is a LevelDB SSTable (TF's copy: tensorflow/core/lib/io/format.cc, block.cc, table.cc; leveldb's
doc/table_format.md): a 48-byte footer points to an index block whose values point to data
blocks; a block holds key-prefix-compressed entries, a restart array and a 5-byte trailer (a
compression type and a masked crc32c). The keys are tensor names in sorted order; the value
under the empty key is a BundleHeaderProto, every other one a BundleEntryProto
(tensorflow/core/protobuf/tensor_bundle.proto): dtype, shape, and the shard, offset, size and
crc32c of the tensor's raw bytes. A partitioned variable's entry lists `slices` instead, and each
slice is an entry of its own under an OrderedCode key (checkpoint::EncodeTensorNameSlice in
tensorflow/core/util/saved_tensor_slice_util.cc). Writer and reader:
tensorflow/core/util/tensor_bundle/tensor_bundle.cc. TF always writes the index uncompressed
(TableBuilderOptions: kNoCompression), so a snappy-compressed block is refused, not decoded.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import re
from typing import BinaryIO, Iterator, NamedTuple

import numpy as np

from common.errors import UserError

_FOOTER_SIZE = 48  # two varint BlockHandles padded to 40 bytes, then the 8-byte magic
_TABLE_MAGIC = (0xdb4775248b80fb57).to_bytes(8, 'little')
_NO_COMPRESSION, _SNAPPY = 0, 1
_BUNDLE_VERSION = 1  # kTensorBundleVersion; a header asks for a reader at least this new
_DTYPES = {1: 'float32', 2: 'float64', 3: 'int32', 4: 'uint8', 5: 'int16', 6: 'int8',
           8: 'complex64', 9: 'int64', 10: 'bool', 17: 'uint16', 18: 'complex128',
           19: 'float16', 22: 'uint32', 23: 'uint64'}
# TF types with no numpy counterpart; read_checkpoint skips them, list_variables names them.
_OTHER_TYPES = {7: 'string', 11: 'qint8', 12: 'quint8', 13: 'qint32', 15: 'qint16',
                16: 'quint16', 20: 'resource', 21: 'variant'}
try:  # bfloat16 comes with ml_dtypes, which JAX depends on
  import ml_dtypes
  _DTYPES[14] = ml_dtypes.bfloat16
except ImportError:
  _OTHER_TYPES[14] = 'bfloat16'


class _Entry(NamedTuple):
  """The fields of a BundleEntryProto that we use."""
  dtype: int
  shape: tuple[int, ...]
  shard: int
  offset: int
  size: int
  crc: int
  sliced: bool


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    byte = buf[pos]  # IndexError on a truncated varint; callers turn it into a UserError
    result |= (byte & 0x7F) << shift
    pos += 1
    if byte < 0x80:
      return result, pos
    shift += 7


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
  """Yields (field number, value) of a serialized protobuf message: ints for varint and
  fixed-width fields, bytes for length-delimited ones (submessages)."""
  pos = 0
  while pos < len(buf):
    tag, pos = _varint(buf, pos)
    field, wire_type = tag >> 3, tag & 7
    if wire_type == 0:
      value, pos = _varint(buf, pos)
    elif wire_type in (1, 5):  # fixed64, fixed32
      width = 8 if wire_type == 1 else 4
      value, pos = int.from_bytes(buf[pos:pos + width], 'little'), pos + width
    elif wire_type == 2:
      length, pos = _varint(buf, pos)
      value, pos = buf[pos:pos + length], pos + length
    else:
      raise ValueError(f'unsupported protobuf wire type {wire_type}')
    yield field, value


def _parse_entry(buf: bytes) -> _Entry:
  fields = {'dtype': 0, 'shape': (), 'shard': 0, 'offset': 0, 'size': 0, 'crc': 0, 'sliced': False}
  names = {1: 'dtype', 3: 'shard', 4: 'offset', 5: 'size', 6: 'crc'}
  for field, value in _proto_fields(buf):
    if field == 2:  # TensorShapeProto: repeated Dim dim = 2, each with int64 size = 1
      fields['shape'] = tuple(
          dict(_proto_fields(dim)).get(1, 0) for number, dim in _proto_fields(value) if number == 2)
    elif field == 7:
      fields['sliced'] = True
    elif field in names:
      fields[names[field]] = value
  return _Entry(**fields)


# crc32c (Castagnoli), the checksum of table blocks and of tensor bytes.
def _make_crc_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC_TABLE = _make_crc_table()
_CRC_TABLE_NP = np.array(_CRC_TABLE, np.uint32)


def _gf2_apply(matrix: list[int], vector: int) -> int:
  """Multiplies a 32x32 matrix over GF(2), given as its 32 columns, by a 32-bit vector."""
  result, bit = 0, 0
  while vector:
    if vector & 1:
      result ^= matrix[bit]
    vector >>= 1
    bit += 1
  return result


@functools.lru_cache(maxsize=None)
def _zeros_tables(num_bytes: int) -> tuple[list[int], ...]:
  """The linear map of the crc register over `num_bytes` zero bytes (found by repeated squaring
  of the one-byte map), as 4 lookup tables, one per byte of the register."""
  power = [_CRC_TABLE[(1 << bit) & 0xFF] ^ ((1 << bit) >> 8) for bit in range(32)]
  matrix = [1 << bit for bit in range(32)]
  while num_bytes:
    if num_bytes & 1:
      matrix = [_gf2_apply(power, column) for column in matrix]
    power = [_gf2_apply(power, column) for column in power]
    num_bytes >>= 1
  return tuple([_gf2_apply(matrix, value << shift) for value in range(256)]
               for shift in (0, 8, 16, 24))


def _crc32c(data: bytes | bytearray) -> int:
  """crc32c of `data`. The byte loop runs at ~7 MB/s in Python, so a large input is cut into
  rows whose registers numpy advances together (~10x faster), then chained in order."""
  if len(data) < 4096:
    crc = 0xFFFFFFFF
    for byte in data:
      crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
  length = 1 << ((len(data).bit_length() - 1) // 2)  # about sqrt(size); a power of 2 for the cache
  rows = -(-len(data) // length)
  # Starting the register at 0, leading zero bytes change nothing, so the message is padded in
  # front; the standard initial value 0xFFFFFFFF equals complementing the first 4 message bytes.
  padded = np.zeros(rows * length, np.uint8)
  message = padded[len(padded) - len(data):]
  message[:] = np.frombuffer(data, np.uint8)
  message[:4] ^= 0xFF
  # Step j needs byte j of every row. Transposing 8-byte words is ~10x faster than bytes.
  words = padded.view(np.uint64).reshape(rows, length // 8).T.copy()
  registers = np.zeros(rows, np.uint32)
  for block in words.view(np.uint8).reshape(length // 8, rows, 8):
    for k in range(8):
      registers = _CRC_TABLE_NP[registers.astype(np.uint8) ^ block[:, k]] ^ (registers >> 8)
  # crc(A + B) = zeros(crc(A), len(B)) ^ crc(B), all from register 0.
  t0, t1, t2, t3 = _zeros_tables(length)
  crc = 0
  for register in registers.tolist():
    crc = t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24] ^ register
  return crc ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
  """TF stores crcs 'masked' (rotated and offset) so that a crc of data holding crcs stays good."""
  rotated = (masked - 0xA282EAD8) & 0xFFFFFFFF
  return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def _read_block(index: bytes, handle: bytes, path: str) -> bytes:
  """The contents of the block that a BlockHandle (varint offset, varint size) points to."""
  offset, pos = _varint(handle, 0)
  size, _ = _varint(handle, pos)
  if offset + size + 5 > len(index):
    raise UserError(f'{path}: truncated TensorFlow checkpoint index')
  contents, kind = index[offset:offset + size], index[offset + size]
  crc = int.from_bytes(index[offset + size + 1:offset + size + 5], 'little')
  if _unmask(crc) != _crc32c(index[offset:offset + size + 1]):
    raise UserError(f'{path}: corrupt TensorFlow checkpoint index (block checksum mismatch)')
  if kind == _SNAPPY:  # only an old TensorFlow could have written one, if any did
    raise UserError(f'{path}: snappy-compressed checkpoint index, which this reader does not '
                    'decode; load and re-save the checkpoint with a current TensorFlow')
  if kind != _NO_COMPRESSION:
    raise UserError(f'{path}: corrupt TensorFlow checkpoint index (block type {kind})')
  return contents


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
  """Yields a block's (key, value)s. Each key shares a prefix with the previous one; at restart
  points (their offsets end the block, for binary search) it shares nothing. A full scan needs
  only where the restart array starts: that is where the entries end."""
  num_restarts = int.from_bytes(block[-4:], 'little')
  end = len(block) - 4 - 4 * num_restarts
  pos, key = 0, b''
  while pos < end:
    shared, pos = _varint(block, pos)
    unshared, pos = _varint(block, pos)
    value_size, pos = _varint(block, pos)
    key = key[:shared] + block[pos:pos + unshared]
    pos += unshared
    yield key, block[pos:pos + value_size]
    pos += value_size


def _checkpoint_prefix(path: str) -> str:
  """The prefix P of P.index for a prefix, an .index file, a directory holding a TF1 `checkpoint`
  file, or a SavedModel directory or its variables/ folder."""
  if path.endswith('.index'):
    return path[:-len('.index')]
  if not os.path.isdir(path):
    return path
  state = os.path.join(path, 'checkpoint')
  if os.path.isfile(state):
    with open(state, encoding='utf-8', errors='replace') as f:
      match = re.search(r'^model_checkpoint_path:\s*"(.*)"', f.read(), re.MULTILINE)
    if not match:
      raise UserError(f'{state}: no model_checkpoint_path line')
    prefix = os.path.join(path, match.group(1))
    # The file may hold an absolute path from the training machine: look next to it instead.
    if not os.path.exists(prefix + '.index'):
      prefix = os.path.join(path, os.path.basename(match.group(1)))
    return prefix
  for prefix in (os.path.join(path, 'variables', 'variables'), os.path.join(path, 'variables')):
    if os.path.isfile(prefix + '.index'):  # a SavedModel, or its variables/ folder
      return prefix
  raise UserError(f'{path}: no TensorFlow checkpoint here (neither a `checkpoint` file '
                  'nor a SavedModel variables/ folder)')


def _read_index(path: str) -> tuple[str, int, bool, dict[bytes, _Entry]]:
  """Returns the prefix, the number of shards, whether the data is big-endian, and the entries."""
  prefix = _checkpoint_prefix(path)
  index_path = prefix + '.index'
  try:
    with open(index_path, 'rb') as f:
      index = f.read()
  except OSError as e:
    raise UserError(f'{index_path}: cannot read TensorFlow checkpoint index: {e.strerror}') from e
  if len(index) < _FOOTER_SIZE or index[-8:] != _TABLE_MAGIC:
    raise UserError(f'{index_path}: not a TensorFlow checkpoint index (truncated or not one)')
  try:
    footer = index[-_FOOTER_SIZE:]
    _, pos = _varint(footer, _varint(footer, 0)[1])  # skip the (empty) metaindex handle
    records = [record for _, handle in _block_entries(_read_block(index, footer[pos:], index_path))
               for record in _block_entries(_read_block(index, handle, index_path))]
    if not records or records[0][0] != b'':
      raise ValueError('no header entry')
    header = dict(_proto_fields(records[0][1]))
    min_consumer = dict(_proto_fields(header.get(3, b''))).get(2, 0)  # VersionDef.min_consumer
    entries = {key: _parse_entry(value) for key, value in records[1:]}
  except (IndexError, ValueError) as e:
    raise UserError(f'{index_path}: corrupt TensorFlow checkpoint index ({e})') from e
  if min_consumer > _BUNDLE_VERSION:
    raise UserError(f'{index_path}: written by a newer TensorFlow (bundle format version '
                    f'{min_consumer}; this reader knows version {_BUNDLE_VERSION})')
  return prefix, header.get(1, 1), header.get(2, 0) == 1, entries


def _numpy_dtype(entry: _Entry) -> np.dtype | str:
  if entry.dtype in _DTYPES:
    return np.dtype(_DTYPES[entry.dtype])
  return _OTHER_TYPES.get(entry.dtype, f'DT_{entry.dtype}')


def list_variables(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype | str]]:
  """Maps each tensor's name to (shape, dtype) without reading tensor data. dtype is a numpy
  dtype, or a TF type name (e.g. 'string') for the tensors that read_checkpoint skips."""
  _, _, _, entries = _read_index(path)
  return {key.decode(): (entry.shape, _numpy_dtype(entry))
          for key, entry in entries.items() if not key.startswith(b'\0')}


def _slice_key_starts(key: bytes) -> tuple[bytes, list[int]]:
  """Decodes a slice's key: OrderedCode of (0, full name, rank, start_0, length_0, ...).
  The name ends with \\0\\1 (names are UTF-8, so they hold no escaped \\0 or \\xff)."""
  end = key.index(b'\0\1', 1)
  pos = end + 3 + key[end + 2]  # skip the rank: a length byte, then big-endian bytes
  numbers = []
  while pos < len(key):
    # Signed numbers: the sign bit, then as many more copies of it as bytes follow the first.
    head = int.from_bytes(key[pos:pos + 2].ljust(2, b'\0'), 'big')
    negative = not head & 0x8000
    size = 16 - ((head ^ 0xFFFF) if not negative else head).bit_length()
    payload_bits = 7 * size - 1
    value = int.from_bytes(key[pos:pos + size], 'big') & ((1 << payload_bits) - 1)
    numbers.append(value - (1 << payload_bits) if negative else value)
    pos += size
  return key[1:end], numbers[0::2]


def read_checkpoint(path: str, verify: bool = True) -> dict[str, np.ndarray]:
  """Reads every numeric tensor of a TF V2 checkpoint into a dict name -> numpy array.

  `path` is a checkpoint prefix (.../model.ckpt-123), its .index file, a directory with a TF1
  `checkpoint` file (its model_checkpoint_path is read), or a SavedModel directory. String,
  resource and variant tensors (e.g. Keras's _CHECKPOINTABLE_OBJECT_GRAPH) are skipped: they are
  the names that list_variables gives a str dtype. Partitioned variables come back whole.
  `verify` checks each tensor's crc32c (~200 MB/s; the index blocks are always checked).
  Raises UserError for a missing, truncated or corrupt file.
  """
  prefix, num_shards, big_endian, entries = _read_index(path)
  shards: dict[int, BinaryIO] = {}

  def read(name: str, entry: _Entry, dtype: np.dtype) -> np.ndarray:
    shard_path = f'{prefix}.data-{entry.shard:05d}-of-{num_shards:05d}'
    if entry.shard not in shards:
      try:
        shards[entry.shard] = open(shard_path, 'rb')  # pylint: disable=consider-using-with
      except OSError as e:
        raise UserError(f'{shard_path}: cannot read checkpoint data: {e.strerror}') from e
    if entry.size != math.prod(entry.shape) * dtype.itemsize:
      raise UserError(f'{prefix}.index: corrupt entry for {name} ({entry.size} bytes for '
                      f'shape {entry.shape} of {dtype})')
    data = bytearray(entry.size)
    shards[entry.shard].seek(entry.offset)
    if shards[entry.shard].readinto(data) != entry.size:  # the shard ends too early
      raise UserError(f'{shard_path}: truncated: {name} needs bytes up to '
                      f'{entry.offset + entry.size}')
    if verify and _crc32c(data) != _unmask(entry.crc):
      raise UserError(f'{shard_path}: corrupt: the bytes of {name} fail their checksum')
    array = np.frombuffer(data, dtype.newbyteorder('>') if big_endian else dtype)
    return array.astype(dtype).reshape(entry.shape) if big_endian else array.reshape(entry.shape)

  slices = collections.defaultdict(list)  # full tensor's key -> [(starts, slice's entry)]
  for key, entry in entries.items():
    if key.startswith(b'\0'):
      full_key, starts = _slice_key_starts(key)
      slices[full_key].append((starts, entry))
  result = {}
  try:
    for key, entry in entries.items():
      dtype = _numpy_dtype(entry)
      if key.startswith(b'\0') or isinstance(dtype, str):
        continue
      name = key.decode()
      if not entry.sliced:
        result[name] = read(name, entry, dtype)
        continue
      # A partitioned variable: fill the full tensor from its slices.
      full, covered = np.zeros(entry.shape, dtype), 0
      for starts, slice_entry in slices[key]:
        region = tuple(slice(s, s + n) for s, n in zip(starts, slice_entry.shape))
        full[region] = read(name, slice_entry, dtype)
        covered += math.prod(slice_entry.shape)
      if covered != full.size:
        raise UserError(f'{prefix}.index: the slices of {name} cover {covered} of its '
                        f'{full.size} elements')
      result[name] = full
  finally:
    for f in shards.values():
      f.close()
  return result
