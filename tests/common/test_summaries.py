"""common/summaries.py: the image grid against NumPy tiling, and dropping the TensorBoard events
of a killed process's tail."""

import glob
import os

import numpy as np
import tensorflow as tf

from common import summaries
from tests import events


class ImageGridTest(tf.test.TestCase):
    def test_tiles_row_major_with_black_padding(self):
        images = np.random.default_rng(0).uniform(size=(5, 2, 3, 1)).astype(np.float32)
        grid = summaries.image_grid(images, columns=3).numpy()[0]
        self.assertEqual(grid.shape, (4, 9, 1))
        for i in range(6):
            r, c = divmod(i, 3)
            cell = grid[2 * r : 2 * r + 2, 3 * c : 3 * c + 3]
            self.assertAllEqual(cell, images[i] if i < 5 else np.zeros_like(images[0]))


class DropEventsTest(tf.test.TestCase):
    def _write(self, log_dir, steps):
        writer = tf.summary.create_file_writer(log_dir)
        with writer.as_default():
            for s in steps:
                tf.summary.scalar("loss", float(s) * 10, step=s)
        writer.close()

    def test_drops_later_steps_and_a_cut_record(self):
        log_dir = self.create_tempdir().full_path
        self._write(log_dir, range(1, 11))
        (path,) = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
        with open(path, "ab") as f:  # a record the kill cut short: a length, no payload
            f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00\x12")
        self.assertEqual(summaries.drop_events_after(log_dir, 6), 4)
        # The cut record went with them: the file is whole records only (8-byte length, 4-byte
        # length CRC, payload, 4-byte payload CRC), the file-version event and steps 1-6.
        records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
        self.assertLen(records, 7)
        self.assertEqual(os.path.getsize(path), sum(len(r) + 16 for r in records))
        self.assertEqual(
            events.scalars(events.load(log_dir), "loss"), [(s, s * 10.0) for s in range(1, 7)]
        )
        # The resumed run appends its own events: each step is read once.
        self._write(log_dir, range(7, 9))
        self.assertEqual(
            [s for s, _ in events.scalars(events.load(log_dir), "loss")], list(range(1, 9))
        )

    def test_nothing_to_drop_leaves_the_file_alone(self):
        log_dir = self.create_tempdir().full_path
        self._write(log_dir, range(1, 4))
        (path,) = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
        before = open(path, "rb").read()
        self.assertEqual(summaries.drop_events_after(log_dir, 3), 0)
        self.assertEqual(open(path, "rb").read(), before)
        self.assertEqual(summaries.drop_events_after(os.path.join(log_dir, "none"), 0), 0)


if __name__ == "__main__":
    tf.test.main()
