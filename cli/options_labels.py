"""Label-map options for ``printpipe run`` and ``printpipe batch``: ``--labels`` and ``--label-names``.

``--labels FILE_OR_FOLDER`` prints a label map the user brings (3D Slicer ``.seg.nrrd``, NIfTI with a
names table, TotalSegmentator output, DICOM SEG, RTSTRUCT) instead of the automatic segmentation;
``--parts`` then chooses among its labels (see :mod:`printpipe.labels`).
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "config_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``label map`` option group."""
    g = parser.add_argument_group("label map (edited or AI segmentation)")
    g.add_argument("--labels", default=None, metavar="FILE_OR_FOLDER",
                   help="print this label map instead of segmenting: 3D Slicer .seg.nrrd, NIfTI .nii.gz (with "
                        "labels.json), a TotalSegmentator output folder, DICOM SEG or RTSTRUCT; --parts picks "
                        "labels by part name (femur_left) or by their own names")
    g.add_argument("--label-names", dest="label_names", default=None, metavar="FILE",
                   help="names of a NIfTI label map's values: JSON {\"1\": \"femur_left\", ...} or "
                        "'totalsegmentator' for its multilabel file (default: the file's own table, then "
                        "labels.json beside it)")
    g.add_argument("--no-label-gap", dest="label_gap", action="store_false", default=True,
                   help="do not clear the one-voxel gap between touching labels (the parts then print fused)")


def config_from_args(args: argparse.Namespace):
    """A :class:`~printpipe.labels.LabelsConfig`, or ``None`` without ``--labels``."""
    from printpipe.labels import LabelsConfig

    path = getattr(args, "labels", None)
    if not path:
        if getattr(args, "label_names", None):
            from printpipe.errors import InputError

            raise InputError("--label-names needs --labels FILE (the label map the names belong to)")
        return None
    if hasattr(args, "all_series"):  # only `printpipe batch` has --all-series
        from printpipe.errors import InputError

        raise InputError("--labels belongs to one CT; run it with `printpipe run CT --labels FILE`, not batch")
    given = [flag for flag, attr in (("--hollow", "hollow_wall_mm"), ("--split-hemipelvis", "split_hemipelvis"),
                                     ("--mirror", "mirror")) if getattr(args, attr, None)]
    if given:
        from printpipe.errors import InputError

        verb = "change" if len(given) > 1 else "changes"
        raise InputError(f"{', '.join(given)} {verb} the automatic segmentation and do nothing with --labels; "
                         f"leave them out (split or edit the parts in the label map instead)")
    return LabelsConfig(path=path, parts=getattr(args, "parts", None),
                        names_table=getattr(args, "label_names", None),
                        gap=bool(getattr(args, "label_gap", True)))
