"""The one reader of uploaded images: multipart parts named `file`, or one raw body of type image/*."""
from __future__ import annotations

from fastapi import Request

from .errors import RequestError


async def read_images(request: Request, max_images: int) -> tuple[list[str | None], list[bytes]]:
    """(file names, encoded images); at most `max_images` parts (413), the body's size is BodyLimit's."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind.startswith("image/"):
        return [None], [await request.body()]
    if kind != "multipart/form-data":
        raise RequestError(415, f"send images as multipart/form-data parts named 'file' or as one body of type "
                                f"image/*, not {kind[:60] or 'no Content-Type'}")
    try:
        form = await request.form(max_files=max_images, max_fields=max_images)
    except RequestError:  # BodyLimit's 413
        raise
    except Exception as err:  # noqa: BLE001 - the multipart parser's errors (MultiPartException, ...)
        reason = str(getattr(err, "detail", err))  # starlette wraps the parser's error in an HTTPException
        if reason.startswith("Too many"):  # its words for max_files / max_fields
            raise RequestError(413, f"more than {max_images} parts in one request ({reason})") from None
        raise RequestError(400, f"malformed multipart body ({reason[:120] or type(err).__name__})") from None
    try:
        parts = form.getlist("file")
        if not parts:
            raise RequestError(422, "no part named 'file': send each image as one part named 'file'")
        names, images = [], []
        for part in parts:
            if isinstance(part, str):
                raise RequestError(422, "the part 'file' must be a file upload, not a text field")
            names.append(part.filename)
            images.append(await part.read())
        return names, images
    finally:
        await form.close()
