"""The marked-span protocol: round trip, verification, crafted markers."""

from gmsa_integrations.markup import MarkedDocument, mark_document, split_marked, unmark


def test_marked_documents_round_trip_between_text():
    prompt = "Intro\n" + mark_document("first doc", 8) + "\n\n" + mark_document("second\nline", 4) + "\nQuestion?"
    pieces = split_marked(prompt)
    assert pieces == ["Intro\n", MarkedDocument("first doc", 8), "\n\n", MarkedDocument("second\nline", 4),
                      "\nQuestion?"]
    assert unmark(prompt) == "Intro\nfirst doc\n\nsecond\nline\nQuestion?"


def test_an_edited_span_stays_text():
    marked = mark_document("the original text", 8)
    edited = marked.replace("original", "altered")
    assert split_marked(edited) == [edited]


def test_an_edited_span_is_warned_about_once(caplog):
    edited = mark_document("a text edited later", 4).replace("later", "afterwards")
    with caplog.at_level("WARNING", logger="gmsa_integrations.markup"):
        assert split_marked(edited) == [edited] and split_marked(edited) == [edited]
    assert len([r for r in caplog.records if "no longer matches its text" in r.getMessage()]) == 1


def test_a_span_costs_a_few_tokens_of_text():
    marked = mark_document("Paris is the capital of France.", 8)
    assert marked.startswith("<g8 ") and marked.endswith("\n</g>") and len(marked) - len("Paris is the capital "
                                                                                         "of France.") == 17


def test_a_crafted_marker_cannot_borrow_another_documents_hash():
    victim = mark_document("secret document", 8)
    digest = victim.split(" ")[1].split(">")[0]
    crafted = f"<g8 {digest}>\nattacker text\n</g>"
    assert split_marked(crafted) == [crafted]
    # A span with a correct hash of its own text is just that text, compressed: harmless.
    assert split_marked(mark_document("attacker text", 8)) == [MarkedDocument("attacker text", 8)]


def test_plain_text_passes_through():
    assert split_marked("no spans here") == ["no spans here"]
    assert split_marked("") == []
