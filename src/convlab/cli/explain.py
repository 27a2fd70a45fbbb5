"""`convlab explain conv|pool|linear|residual|backprop|iou|nms|upsample`: the arithmetic of each layer, of a
detector's box post-processing and of a decoder's upsampling, step by step."""
from __future__ import annotations

import argparse

from ..errors import ConvlabError


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("explain", help="show the computation of a layer, IoU, NMS or upsampling step by step",
                            description="Print a layer's computation, a detector's IoU and NMS, or a decoder's "
                                        "upsampling, step by step with small numbers. Matrices are written as rows "
                                        "separated by ';', e.g. --input \"1 0 2; 0 1 1\".")
    topics = parser.add_subparsers(dest="topic", metavar="TOPIC", parser_class=type(parser))
    topics.required = True

    conv = topics.add_parser("conv", help="each window, its products and sum, then the output matrix",
                             description="Convolution step by step. Without --input/--kernel: the texts' 5x5 "
                                         "example with a 3x3 kernel.")
    conv.add_argument("--input", metavar="ROWS", help="input matrix (default: the texts' 5x5 example)")
    conv.add_argument("--kernel", metavar="ROWS", help="kernel matrix (default: the texts' 3x3 example)")
    conv.add_argument("--stride", type=int, default=1, metavar="N", help="step between windows (default: 1)")
    conv.add_argument("--padding", type=int, default=0, metavar="N", help="rings of zeros around the input "
                                                                           "(default: 0)")
    conv.add_argument("--mode", choices=["correlation", "convolution"], default="correlation",
                      help="correlation (what frameworks compute, the default) or true convolution (kernel "
                           "turned 180 degrees)")
    conv.set_defaults(func=cmd_conv)

    pool = topics.add_parser("pool", help="max and average pooling of each window",
                             description="Pooling step by step. Without --input: a 4x4 example, 2x2 windows, "
                                         "stride 2.")
    pool.add_argument("--input", metavar="ROWS", help="input matrix (default: a 4x4 example)")
    pool.add_argument("--size", type=int, default=2, metavar="N", help="window size (default: 2)")
    pool.add_argument("--stride", type=int, default=None, metavar="N", help="step between windows "
                                                                             "(default: the window size)")
    pool.set_defaults(func=cmd_pool)

    linear = topics.add_parser("linear", help="a fully connected layer, y = W x + b, one output at a time",
                               description="A fully connected layer step by step.")
    linear.add_argument("--x", metavar="ROW", help="input vector, e.g. \"1 2 3\"")
    linear.add_argument("--weight", metavar="ROWS", help="weight matrix, outputs x inputs")
    linear.add_argument("--bias", metavar="ROW", help="bias vector, one per output (default: zeros)")
    linear.set_defaults(func=cmd_linear)

    residual = topics.add_parser("residual", help="a residual block, y = relu(F(x) + x)",
                                 description="A residual block step by step, and why the shortcut helps training.")
    residual.add_argument("--input", metavar="ROWS", help="input matrix")
    residual.add_argument("--kernel", metavar="ROWS", help="odd square kernel of F")
    residual.set_defaults(func=cmd_residual)

    backprop = topics.add_parser("backprop", help="the chain rule on one neuron, checked by finite differences",
                                 description="Backpropagation through z = w*x + b, a = sigmoid(z), "
                                             "L = (a - t)^2.")
    for name, default in (("x", 2.0), ("w", 0.5), ("b", -0.5), ("target", 1.0)):
        backprop.add_argument(f"--{name}", type=float, default=default, metavar="X", help=f"(default: {default})")
    backprop.set_defaults(func=cmd_backprop)

    iou = topics.add_parser("iou", help="intersection over union of two boxes",
                            description="IoU of two boxes step by step, checked against torchvision.ops.box_iou. "
                                        "A box is x1 y1 x2 y2: its top-left and bottom-right corners (y down).")
    iou.add_argument("--a", metavar="BOX", help="first box, e.g. \"10 10 50 50\" (default: a small example)")
    iou.add_argument("--b", metavar="BOX", help="second box, e.g. \"30 20 70 60\" (default: a small example)")
    iou.set_defaults(func=cmd_iou)

    nms = topics.add_parser("nms", help="non-maximum suppression: why a box disappears",
                            description="Non-maximum suppression step by step, checked against "
                                        "torchvision.ops.nms (batched_nms when the boxes have classes). Without "
                                        "--boxes: six boxes on two people.")
    nms.add_argument("--boxes", metavar="BOXES", help="boxes with scores, one per ';': \"x1 y1 x2 y2 score; ...\"; "
                                                       "a sixth number is the box's class, and then boxes are "
                                                       "compared only with boxes of their own class")
    nms.add_argument("--iou", type=float, default=0.5, metavar="X",
                     help="a box whose IoU with a kept box is above this is suppressed (default: 0.5)")
    nms.set_defaults(func=cmd_nms)

    upsample = topics.add_parser("upsample", help="how a decoder grows a map back: transposed convolution, "
                                                  "bilinear or nearest, and the checkerboard",
                                 description="Upsampling step by step, checked against torch "
                                             "(F.conv_transpose2d, F.interpolate) in float64. Without --input: a "
                                             "2x2 example grown by 2 (a 3x3 kernel for transposed).")
    upsample.add_argument("--mode", choices=["transposed", "bilinear", "nearest"], default="transposed",
                          help="transposed convolution (the default: each input value times the kernel stamped "
                               "into the output), bilinear (align_corners=False) or nearest")
    upsample.add_argument("--input", metavar="ROWS", help="input matrix (default: \"1 2; 3 4\")")
    upsample.add_argument("--kernel", metavar="ROWS", help="transposed only: the kernel (default: a 3x3 example)")
    upsample.add_argument("--stride", type=int, default=2, metavar="N",
                          help="how many times larger the map grows: the transposed convolution's stride, or "
                               "bilinear/nearest's scale factor (default: 2)")
    upsample.add_argument("--padding", type=int, default=0, metavar="N",
                          help="transposed only: rows and columns cut from each side of the output (default: 0)")
    upsample.set_defaults(func=cmd_upsample)


def _matrix(option: str, text: str | None):
    from ..scratch import explain  # lazy: start-up time (NumPy)

    if text is None:
        return None
    try:
        return explain.parse_matrix(text)
    except ValueError as err:
        raise ConvlabError(f"{option} {text!r}: {err}; write rows separated by ';' and numbers by spaces, "
                           f"e.g. \"1 0 1; 0 1 0\"") from None


def _show(build, what: str) -> int:
    try:
        print(build())
    except ValueError as err:
        raise ConvlabError(f"{what}: {err}") from None
    return 0


def cmd_conv(args) -> int:
    from ..scratch import explain  # lazy: start-up time (NumPy)

    image, kernel = _matrix("--input", args.input), _matrix("--kernel", args.kernel)
    return _show(lambda: explain.explain_conv(image, kernel, args.stride, args.padding, args.mode),
                 "--input/--kernel/--stride/--padding")


def cmd_pool(args) -> int:
    from ..scratch import explain  # lazy: start-up time (NumPy)

    image = _matrix("--input", args.input)
    return _show(lambda: explain.explain_pool(image, args.size, args.stride), f"--size {args.size}")


def cmd_linear(args) -> int:
    from ..scratch import explain  # lazy: start-up time (NumPy)

    x, weight, bias = _matrix("--x", args.x), _matrix("--weight", args.weight), _matrix("--bias", args.bias)
    return _show(lambda: explain.explain_linear(x, weight, bias), "--x/--weight/--bias")


def cmd_residual(args) -> int:
    from ..scratch import explain  # lazy: start-up time (NumPy)

    image, kernel = _matrix("--input", args.input), _matrix("--kernel", args.kernel)
    return _show(lambda: explain.explain_residual(image, kernel), "--kernel")


def cmd_backprop(args) -> int:
    from ..scratch import explain  # lazy: start-up time (NumPy)

    return _show(lambda: explain.explain_backprop(args.x, args.w, args.b, args.target), "backprop")


def cmd_iou(args) -> int:
    from ..detection import explain  # lazy: start-up time (torch)

    a, b = (None if text is None else _parsed(explain.parse_box, option, text)
            for option, text in (("--a", args.a), ("--b", args.b)))
    return _show(lambda: explain.explain_iou(a, b), "--a/--b")


def cmd_nms(args) -> int:
    from ..detection import explain  # lazy: start-up time (torch)

    boxes, scores, classes = (None, None, None) if args.boxes is None else \
        _parsed(explain.parse_scored_boxes, "--boxes", args.boxes)
    return _show(lambda: explain.explain_nms(boxes, scores, args.iou, classes), "--iou")  # the boxes are checked


def cmd_upsample(args) -> int:
    from ..segmentation import explain  # lazy: start-up time (torch)

    image, kernel = _matrix("--input", args.input), _matrix("--kernel", args.kernel)
    return _show(lambda: explain.explain_upsample(args.mode, image, kernel, args.stride, args.padding),
                 f"--mode {args.mode} --stride {args.stride} --padding {args.padding}")


def _parsed(parse, option: str, text: str):
    try:
        return parse(text)
    except ValueError as err:
        raise ConvlabError(f"{option} {text!r}: {err}") from None
