"""Axial holes of a hip bone walled in part by another part (printpipe.segment.solid._shared_holes),
on synthetic sections with a known answer: the sacrum's basin can take the faint medial wall of the
posterior ilium, which leaves the ilium's fatty marrow open towards the sacrum (a one-voxel gap is
kept between parts)."""

import numpy as np

from printpipe.segment import solid

SP = np.array([1.0, 1.0, 1.0])


def _section(wall_label: int):
    """A 30 x 30 mm ring of cortex (label 1) around fatty marrow (0 HU), whose right wall is the
    label ``wall_label`` across a one-voxel gap; five slices."""
    sub = np.zeros((5, 60, 60), np.int32)
    ring = np.zeros((60, 60), bool)
    ring[15:45, 15:45] = True
    ring[18:42, 18:42] = False
    sub[:, ring] = 1
    sub[:, 18:42, 41:45] = 0          # the right wall is not the part's ...
    sub[:, 15:45, 42:45] = wall_label  # ... but another part's, one voxel away
    hu = np.where(sub > 0, 600, 0).astype(np.int16)
    marrow = np.zeros_like(sub, bool)
    marrow[:, 18:42, 18:41] = True
    return sub, hu, marrow


def test_a_marrow_hole_walled_mostly_by_the_hip_bone_is_filled():
    sub, hu, marrow = _section(wall_label=2)
    closed = sub == 1
    holes = solid._shared_holes(closed, hu, sub, (sub != 0) & (sub != 1), SP, femurs=())
    assert holes[marrow].mean() > 0.95
    assert not holes[sub != 0].any()


def test_no_hole_is_filled_against_a_femur_or_where_the_other_part_walls_most():
    sub, hu, _ = _section(wall_label=2)
    # the other part is a femur: the joint space and the acetabular fossa are no marrow
    assert not solid._shared_holes(sub == 1, hu, sub, sub == 2, SP, femurs=(2,)).any()
    # the other part walls three sides: the hole is its own, not the hip bone's
    sub2 = sub.copy()
    sub2[:, 15:18, 15:45] = 2
    sub2[:, 42:45, 15:45] = 2
    sub2[:, 15:45, 17] = 0
    sub2[:, 17, 15:45] = 0
    sub2[:, 41, 15:45] = 0
    assert not solid._shared_holes(sub2 == 1, hu, sub2, sub2 == 2, SP, femurs=()).any()
