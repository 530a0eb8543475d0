"""The marker protocol: round trip, verification, crafted markers, its cost in tokens."""

from gmsa_integrations.markup import MarkedDocument, mark_document, split_marked, text_digest, unmark


def test_marked_documents_round_trip_between_text():
    prompt = "Intro\n" + mark_document("first doc", 8) + "\n\n" + mark_document("second\nline", 4) + "\nQuestion?"
    pieces = split_marked(prompt)
    assert pieces == ["Intro\n", MarkedDocument("first doc", 8), "\n\n", MarkedDocument("second\nline", 4),
                      "\nQuestion?"]
    assert unmark(prompt) == "Intro\nfirst doc\n\nsecond\nline\nQuestion?"


def test_documents_ending_in_a_line_break_or_the_prompt_and_holding_marker_like_lines():
    tricky = "a line\n[8 that with]\nnot a marker of this text\n"
    prompt = mark_document(tricky, 8) + mark_document("last", 16)
    assert split_marked(prompt) == [MarkedDocument(tricky, 8), MarkedDocument("last", 16)]


def test_an_edited_document_stays_text():
    marked = mark_document("the original text", 8)
    edited = marked.replace("original", "altered")
    assert split_marked(edited) == [edited]


def test_an_edited_document_is_warned_about_once(caplog):
    edited = mark_document("a text edited later", 4).replace("later", "afterwards")
    with caplog.at_level("WARNING", logger="gmsa_integrations.markup"):
        assert split_marked(edited) == [edited] and split_marked(edited) == [edited]
    assert len([r for r in caplog.records if "no longer matches its text" in r.getMessage()]) == 1


def test_a_marker_costs_a_few_tokens_of_text():
    marked = mark_document("Paris is the capital of France.", 8)
    assert marked == f"[8 {text_digest('Paris is the capital of France.')}]\nParis is the capital of France."
    first, second = text_digest("Paris is the capital of France.").split()
    assert 4 <= len(first) <= 7 and 4 <= len(second) <= 7 and first.isalpha() and second.isalpha()


def test_a_crafted_marker_cannot_borrow_another_documents_hash():
    victim = mark_document("secret document", 8)
    digest = victim[3:].split("]")[0]
    crafted = f"[8 {digest}]\nattacker text"
    assert split_marked(crafted) == [crafted]
    # A marker with a correct hash of its own text is just that text, compressed: harmless.
    assert split_marked(mark_document("attacker text", 8)) == [MarkedDocument("attacker text", 8)]


def test_plain_text_passes_through():
    assert split_marked("no markers here") == ["no markers here"]
    assert split_marked("[8 not markers]\n") == ["[8 not markers]\n"]
    assert split_marked("") == []
