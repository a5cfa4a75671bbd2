"""pytest setup shared by every test file."""

from absl import flags

# tf.test.TestCase / absltest helpers (create_tempdir, ...) read absl flags,
# which pytest never parses; mark them parsed with their defaults.
if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
