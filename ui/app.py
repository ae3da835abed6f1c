"""The bonefrac web page: upload X-rays, see what the inference service predicts.

Run with ``streamlit run ui/app.py``. The page reaches the model only over HTTP, at
``BONEFRAC_API_URL`` (default ``http://localhost:8000``), so installing ``.[ui]`` is enough
to run it: no TensorFlow, no model files. Previews are decoded here by the shared
:mod:`modelio.images` (numpy, Pillow, pydicom), so a DICOM upload is shown as the model
sees it. Every service failure is turned by
:mod:`ui.client` into a :class:`~ui.client.ServiceError` and shown as a message on the page.

Streamlit executes this file top to bottom on every interaction, so it holds no module
state: the HTTP client lives in ``st.cache_resource`` (one keep-alive connection for all
reruns and sessions) and answers already received live in ``st.session_state`` (moving a
widget does not send every image again).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import cached_property

import altair as alt
import streamlit as st
from PIL import Image, ImageDraw

from modelio.contract import FINDING_HEADLINES
from ui import review
from ui.client import (
    DEFAULT_API_URL,
    DEFAULT_READ_TIMEOUT,
    DicomInfo,
    Fracture,
    ModelClasses,
    Prediction,
    ServiceClient,
    ServiceError,
)
from ui.overlay import HeatmapError, draw_boxes, overlay, read_heatmap
from ui.preview import UNREADABLE, cached_preview

logger = logging.getLogger("bonefrac.ui")

DISCLAIMER = "Decision support only, not a diagnosis: a qualified clinician must read every image."
RESULTS_KEY = "bonefrac_results"
#: The service's default BONEFRAC_MAX_UPLOAD_BYTES (10 MiB); Streamlit's own is 200 MB.
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: The service's warning for a model without class maps (the page always asks for a heatmap).
NO_EXPLANATION = "no_explanation"
BOXES_MEANING = (
    "Boxes mark where the model places a fracture when it finds one or is unsure; "
    "a box is a place to look, not a measurement."
)
#: What the heatmap is and is not, in one line under the toggle.
HEATMAP_MEANING = (
    "The heatmap marks where the image features that drove the answer lie: where the model "
    "looked, not proof of a fracture nor its outline."
)
ACCENT = "#d9480f"
MUTED = "#8aa4c8"


@dataclass(frozen=True)
class Upload:
    """One uploaded file, reduced to what the page needs."""

    name: str
    data: bytes
    media_type: str | None

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def api_url() -> str:
    """The service URL, read on every run so a changed environment needs no code change."""
    return os.environ.get("BONEFRAC_API_URL", "").strip() or DEFAULT_API_URL


def api_key() -> tuple[str | None, str]:
    """The key and header the service may require, named as the service names them."""
    key = os.environ.get("BONEFRAC_API_KEY", "").strip() or None
    header = os.environ.get("BONEFRAC_API_KEY_HEADER", "").strip() or "X-API-Key"
    return key, header


def max_upload_mb() -> int:
    """The largest file the uploader takes, in Streamlit's MB (MiB), from the same
    ``BONEFRAC_MAX_UPLOAD_BYTES`` the service reads: the page then says the limit the
    service enforces instead of Streamlit's "200MB per file"."""
    raw = os.environ.get("BONEFRAC_MAX_UPLOAD_BYTES", "").strip()
    try:
        limit = int(raw) if raw else DEFAULT_MAX_UPLOAD_BYTES
    except ValueError:
        limit = DEFAULT_MAX_UPLOAD_BYTES
    return max(1, limit // (1024 * 1024))


@st.cache_resource(show_spinner=False)
def page_icon() -> Image.Image:
    """The tab icon, drawn here: a material icon or an emoji would be fetched from the
    internet by the browser, and the page must work without it."""
    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((2, 2, 62, 62), radius=12, fill=(33, 37, 41, 255))
    bone = (240, 240, 235, 255)
    draw.line((20, 44, 44, 20), fill=bone, width=9)
    for x, y in ((15, 42), (22, 49), (42, 15), (49, 22)):
        draw.ellipse((x - 7, y - 7, x + 7, y + 7), fill=bone)
    return icon


def read_timeout() -> float:
    """Seconds a prediction may take (``BONEFRAC_API_TIMEOUT``), the client's default if unset."""
    raw = os.environ.get("BONEFRAC_API_TIMEOUT", "").strip()
    try:
        return float(raw) if raw else DEFAULT_READ_TIMEOUT
    except ValueError:
        return DEFAULT_READ_TIMEOUT


@st.cache_resource(show_spinner=False)
def get_client(base_url: str, timeout: float, key: str | None, key_header: str) -> ServiceClient:
    """One client per settings for the whole process, so reruns reuse its open connection."""
    return ServiceClient(base_url, read_timeout=timeout, api_key=key, api_key_header=key_header)


def predict(client: ServiceClient, upload: Upload, served_version: int | None) -> Prediction:
    """The service's answer for ``upload``, asked once per file content, service URL and
    served model version: after the service loads a newer version, the page asks again."""
    results: dict[tuple[str, int | None, str], Prediction] = st.session_state.setdefault(
        RESULTS_KEY, {}
    )
    key = (client.base_url, served_version, upload.digest)
    if key not in results:
        # Errors are not stored: the next rerun tries again, which is what a user who
        # has just restarted the service expects.
        # Always with the heatmap (a few milliseconds): the toggle and the opacity slider
        # then redraw the card without asking the service again.
        results[key] = client.predict(upload.name, upload.data, upload.media_type, explain=True)
    return results[key]


def forget_removed(uploads: list[Upload]) -> None:
    """Drop stored answers for files no longer uploaded, so re-adding one asks again
    (the service may serve a newer model by then) and the session does not grow."""
    results: dict[tuple[str, int | None, str], Prediction] = st.session_state.get(RESULTS_KEY, {})
    current = {upload.digest for upload in uploads}
    for key in [key for key in results if key[2] not in current]:
        del results[key]


def probability_chart(prediction: Prediction) -> alt.Chart:
    """Every class's probability, highest first, the predicted class highlighted."""
    rows = [
        {
            "Class": item.label,
            "Probability": item.probability,
            "Predicted": item.label == prediction.label,
        }
        for item in prediction.probabilities
    ]
    order = [str(row["Class"]) for row in rows]
    base = alt.Chart(alt.Data(values=rows)).encode(
        y=alt.Y("Class:N", sort=order, title=None, axis=alt.Axis(labelLimit=220, labelFontSize=12)),
        x=alt.X(
            "Probability:Q",
            scale=alt.Scale(domain=[0, 1]),
            axis=alt.Axis(format="%", tickCount=5),
            title="Probability",
        ),
        tooltip=[alt.Tooltip("Class:N"), alt.Tooltip("Probability:Q", format=".1%")],
    )
    bars = base.mark_bar(cornerRadiusEnd=3).encode(
        color=alt.condition(alt.datum.Predicted, alt.value(ACCENT), alt.value(MUTED), legend=None)
    )
    labels = base.mark_text(align="left", dx=4, fontSize=12).encode(
        text=alt.Text("Probability:Q", format=".1%")
    )
    return (bars + labels).properties(height=alt.Step(26))


_UNKNOWN_TRAINING = "This model version does not say what it was trained on."


def render_sidebar(client: ServiceClient) -> int | None:
    """The service's status and the classes the model knows, or why they are unknown.

    Returns the served model version when the service names one."""
    with st.sidebar:
        st.header("Service")
        st.caption(f"`{client.base_url}`")
        status = client.status()
        if status.ready:
            st.success("Ready", icon=":material/check_circle:")
        elif status.alive:
            st.warning(f"Up, but not ready: {status.detail}", icon=":material/hourglass_top:")
        else:
            st.error(status.detail, icon=":material/cloud_off:")
        st.button("Refresh status", icon=":material/refresh:")  # a click reruns the page

        if not status.alive:
            return None
        try:
            info: ModelClasses = client.classes()
        except ServiceError as exc:
            st.info(f"Classes unavailable: {exc.message}")
            return None
        st.subheader("Model")
        st.markdown(f"**{info.model}** · version {info.version}")
        st.caption(f"Trained on {info.trained_on}." if info.trained_on else _UNKNOWN_TRAINING)
        st.subheader(f"Classes ({len(info.classes)})")
        st.markdown("\n".join(f"- {name}" for name in info.classes))
        return info.version


@dataclass(frozen=True)
class HeatmapView:
    """The reader's choice: show the heatmap or not, how opaque (0..1), and the boxes."""

    show: bool
    opacity: float
    boxes: bool = True


def render_heatmap_controls() -> HeatmapView:
    """The toggle and the opacity slider, once for all cards, with what the heatmap means."""
    left, middle, right = st.columns([2, 3, 2], gap="large")
    with left:
        show = st.toggle("Show where the model looked", value=True)
    with middle:
        opacity = st.slider("Heatmap opacity", 0, 100, 50, step=5, format="%d%%", disabled=not show)
    with right:
        boxes = st.toggle("Show fracture boxes", value=True)
    st.caption(BOXES_MEANING + " " + HEATMAP_MEANING)
    return HeatmapView(show=show, opacity=opacity / 100.0, boxes=boxes)


def render_result(
    upload: Upload, client: ServiceClient, served_version: int | None, view: HeatmapView
) -> None:
    """One bordered card: the image beside the prediction, or beside what went wrong."""
    with st.container(border=True):
        st.markdown(f"##### :material/image: {upload.name}")
        left, right = st.columns([2, 3], gap="large")
        with right:
            try:
                with st.spinner(f"Classifying {upload.name}…"):
                    prediction: Prediction | None = predict(client, upload, served_version)
            except ServiceError as exc:
                logger.warning("prediction failed for %s: %s (%s)", upload.name, exc, exc.code)
                st.error(exc.message, icon=":material/error:")
                prediction = None
            if prediction is not None:
                render_prediction(prediction)
                review.render_review_form(client, prediction)
        with left:
            shown = cached_preview(upload.digest, upload.data)
            render_image(shown.image, prediction, view, no_preview=shown.reason or UNREADABLE)


def render_image(
    image: Image.Image | None,
    prediction: Prediction | None,
    view: HeatmapView,
    no_preview: str = UNREADABLE,
) -> None:
    """The preview, with the answer's heatmap over it when there is one and it is wanted;
    without one, why (the service's own sentence when it would refuse the file too)."""
    if image is None:
        st.caption(f"No preview: {no_preview}")
        return
    caption = f"{image.width} x {image.height} px preview"
    explanation = prediction.explanation if prediction is not None else None
    if view.show and explanation is not None:
        try:
            image = overlay(image, read_heatmap(explanation.heatmap_png), view.opacity)
            caption += f" · where the model looked for {explanation.label}"
        except HeatmapError as exc:
            logger.warning("unreadable heatmap: %s", exc)
            caption += " · the heatmap could not be read"
    elif view.show and prediction is not None and _cannot_explain(prediction):
        caption += " · this model version cannot show where it looked"
    fracture = prediction.fracture if prediction is not None else None
    if view.boxes and fracture is not None and fracture.regions:
        image = draw_boxes(image, [r.box for r in fracture.regions], fracture.image_size)
        count = len(fracture.regions)
        caption += f" · {count} fracture box{'es' if count > 1 else ''} (cyan)"
    st.image(image, caption=caption)


def _cannot_explain(prediction: Prediction) -> bool:
    return any(w.code == NO_EXPLANATION for w in prediction.warnings)


def render_finding(fracture: Fracture) -> None:
    """The first question: is a bone broken? The finding, its probability, what it means."""
    st.caption("Is a bone broken?")
    st.header(FINDING_HEADLINES.get(fracture.finding, fracture.finding), anchor=False)
    if fracture.probability is not None:
        st.metric("Fracture probability", f"{fracture.probability:.1%}")
    if fracture.rule_out is not None and fracture.rule_in is not None:
        st.caption(
            f"Below {fracture.rule_out:.0%}: no fracture seen (in cross-validation "
            f"{fracture.sensitivity or 0:.0%} of fractures scored above it); from "
            f"{fracture.rule_in:.0%}: fracture likely ({fracture.specificity or 0:.0%} of "
            "intact bones scored below it); between the two: uncertain."
        )


def render_prediction(prediction: Prediction) -> None:
    """Warnings, then the finding (is a bone broken?), then the type, the chart and who
    answered."""
    for warning in prediction.warnings:
        if warning.code != NO_EXPLANATION:  # said under the image instead: not a reason to doubt
            st.warning(f"**Warning:** {warning.message}", icon=":material/warning:")
    if prediction.fracture is not None:
        render_finding(prediction.fracture)
        st.divider()
        st.caption("If this is a fracture, its type is most likely")
    else:
        st.caption(
            "Predicted fracture type (this model version does not say whether a bone is "
            "broken: it names a type for any image)"
        )
    # A header, not st.metric: metrics cut long class names short with an ellipsis. The
    # confidence goes below it at the card's full width: in a quarter-width column beside
    # the label, an 800 px window showed "Confi…" and "6…".
    if prediction.fracture is not None:
        st.subheader(prediction.label, anchor=False)
    else:
        st.header(prediction.label, anchor=False)
    st.metric("Confidence", f"{prediction.confidence:.1%}")
    st.altair_chart(probability_chart(prediction), width="stretch")
    if prediction.dicom is not None:
        st.caption(dicom_summary(prediction.dicom))
    trained = f", trained on {prediction.trained_on}" if prediction.trained_on else ""
    st.caption(
        f"Answered by model **{prediction.model}**, version **{prediction.version}**{trained}."
    )


def dicom_summary(info: DicomInfo) -> str:
    """One line of the acquisition facts the service read from a DICOM upload."""
    size = f"{info.columns} x {info.rows} px" if info.columns and info.rows else None
    bits = f"{info.bits_stored}-bit" if info.bits_stored else None
    frames = f"{info.frames} frames (first classified)" if info.frames and info.frames > 1 else None
    parts = [
        info.modality,
        info.body_part_examined,
        info.view_position,
        info.photometric_interpretation,
        size,
        bits,
        frames,
        info.transfer_syntax,
        info.windowing,
    ]
    return "DICOM: " + " · ".join(part for part in parts if part)


def render_page() -> None:
    """The whole page, top to bottom."""
    client = get_client(api_url(), read_timeout(), *api_key())
    served_version = render_sidebar(client)
    if review.choose_view() == review.RECENT:
        review.render_recent(client)
        return

    st.title("Bone fracture X-ray classifier")
    st.info(DISCLAIMER, icon=":material/medical_information:")
    files = st.file_uploader(
        "Upload one or more X-ray images",
        # Any file name: DICOM exports often have no extension, which Streamlit's type
        # filter would refuse; the service has the last word on what it can decode.
        type=None,
        accept_multiple_files=True,
        max_upload_size=max_upload_mb(),
        help="JPEG, PNG, BMP, TIFF, WebP or DICOM (.dcm or no extension; the first frame). "
        "Each image is sent to the prediction service.",
    )
    uploads = [Upload(file.name, file.getvalue(), file.type or None) for file in files or ()]
    forget_removed(uploads)
    if not uploads:
        st.caption("The predicted fracture type and every class's probability appear here.")
        return
    view = render_heatmap_controls()
    for upload in uploads:
        render_result(upload, client, served_version, view)


def main() -> None:
    """Entry point: page setup, then the page, with a last-resort message instead of a trace."""
    st.set_page_config(page_title="Bone fracture classifier", page_icon=page_icon(), layout="wide")
    try:
        render_page()
    except ServiceError as exc:
        st.error(exc.message, icon=":material/error:")
    except Exception:
        # A bug in the page must still leave the user a readable page; the log has the trace.
        logger.exception("unexpected error while rendering the page")
        st.error(
            "Something went wrong while drawing the page. Reload it; if this persists, "
            "the server log has the details.",
            icon=":material/error:",
        )


if __name__ == "__main__":  # Streamlit runs this file as __main__; imports stay inert.
    main()
