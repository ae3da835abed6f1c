"""The reader's side of the page: confirm or correct each answer, and see recent answers
with their reviews, disagreements first.

Everything goes through :class:`ui.client.ServiceClient` over HTTP (``POST /feedback``,
``GET /predictions``). The reviewer key, when the service asks for one
(``BONEFRAC_REVIEWER_KEY``), is read from the page's environment under the same name.
The reader's id is typed once per session and remembered in ``st.session_state``.
"""

from __future__ import annotations

import os

import streamlit as st

from ui.client import LoggedAnswer, Prediction, ReviewDraft, ServiceClient, ServiceError

READER_KEY = "bonefrac_reader"
VIEW_KEY = "bonefrac_view"
CLASSIFY, RECENT = "Classify images", "Recent answers and reviews"
#: The finding choices, as the reader reads them, and what the service is sent.
FINDINGS = {"Fracture": "fracture", "No fracture": "no_fracture", "Not judged": None}
NOT_JUDGED_TYPE = "(type not judged)"
NO_PATIENT_DATA = "Never write patient names or identifiers in the note."


def reviewer_key() -> str | None:
    return os.environ.get("BONEFRAC_REVIEWER_KEY", "").strip() or None


def choose_view() -> str:
    """The sidebar's choice between classifying and the review list."""
    with st.sidebar:
        return str(st.radio("Page", (CLASSIFY, RECENT), key=VIEW_KEY))


def _model_finding(prediction: Prediction) -> str | None:
    fracture = getattr(prediction, "fracture", None)
    return getattr(fracture, "finding", None)


def render_review_form(client: ServiceClient, prediction: Prediction) -> None:
    """Under an answer: the reader confirms or corrects the finding and the type."""
    if prediction.prediction_id is None:
        return  # a service without a prediction log
    key = prediction.prediction_id
    with st.expander("Review this answer", icon=":material/rate_review:"):
        with st.form(f"review-{key}", border=False):
            model_finding = _model_finding(prediction)
            labels = list(FINDINGS)
            default = next(
                (i for i, label in enumerate(labels) if FINDINGS[label] == model_finding),
                len(labels) - 1,
            )
            finding_label = st.radio("Finding", labels, index=default, horizontal=True)
            types = [NOT_JUDGED_TYPE, *(p.label for p in prediction.probabilities)]
            fracture_type = st.selectbox(
                "Fracture type", types, index=types.index(prediction.label)
            )
            comment = st.text_area("Note", max_chars=2000, help=NO_PATIENT_DATA)
            reader = st.text_input(
                "Reader",
                value=st.session_state.get(READER_KEY, ""),
                max_chars=200,
                help="Your initials or staff id: stored with the review.",
            )
            submitted = st.form_submit_button("Save review", icon=":material/save:")
        if submitted:
            submit(
                client,
                prediction,
                finding_label=finding_label,
                fracture_type=fracture_type,
                comment=comment,
                reader=reader,
            )


def submit(
    client: ServiceClient,
    prediction: Prediction,
    *,
    finding_label: str,
    fracture_type: str,
    comment: str,
    reader: str,
) -> None:
    """Send the review and say what the service made of it."""
    if not reader.strip():
        st.warning("Type your reader id to save a review.", icon=":material/badge:")
        return
    st.session_state[READER_KEY] = reader.strip()
    finding = FINDINGS.get(finding_label)
    draft = ReviewDraft(
        prediction_id=str(prediction.prediction_id),
        reader=reader.strip(),
        finding=finding,
        fracture_type=None
        if fracture_type == NOT_JUDGED_TYPE or finding == "no_fracture"
        else fracture_type,
        comment=comment.strip() or None,
    )
    try:
        review = client.send_review(draft, reviewer_key=reviewer_key())
    except ServiceError as exc:
        st.error(exc.message, icon=":material/error:")
        return
    verdict = "corrects the model" if review.disagrees else "agrees with the model"
    st.success(f"Review saved: {verdict}.", icon=":material/check_circle:")


def render_recent(client: ServiceClient) -> None:
    """The latest answers with their reviews, those a reader contradicted first."""
    st.title("Recent answers and reviews")
    st.caption("Answers a reader contradicted come first, then the newest.")
    try:
        answers = client.recent_answers(50, reviewer_key=reviewer_key())
    except ServiceError as exc:
        st.error(exc.message, icon=":material/error:")
        return
    if not answers:
        st.info("No answers recorded yet.", icon=":material/inbox:")
        return
    for answer in answers:
        render_logged(answer)


def render_logged(answer: LoggedAnswer) -> None:
    with st.container(border=True):
        flag = ":red[**Disagreement**] · " if answer.disagreement else ""
        finding = f" · finding **{answer.finding}**" if answer.finding else ""
        st.markdown(
            f"{flag}**{answer.label}** ({answer.confidence:.0%}){finding} · model "
            f"{answer.model} v{answer.version} · {answer.image_kind} · {answer.created_at[:19]}"
        )
        if answer.warnings:
            st.caption("Warnings: " + ", ".join(answer.warnings))
        if not answer.reviews:
            st.caption("Not reviewed yet.")
        for review in answer.reviews:
            said = " · ".join(
                part for part in (review.finding, review.fracture_type, review.comment) if part
            )
            mark = ":red[disagrees]" if review.disagrees else ":green[agrees]"
            st.markdown(f"- **{review.reader}** ({mark}): {said}")
