/*
 * wire.c - parsing OP_MSG / OP_QUERY requests and framing replies (see wire.h).
 */
#include "wire.h"

#include "bsonval.h"

#include <string.h>

static int32_t read_i32(const uint8_t *p)
{
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return (int32_t)v;
}

static void write_i32(uint8_t *p, int32_t value)
{
    uint32_t v = (uint32_t)value;
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* A BSON document at p within [p, end): length-checked and validated. */
static bool read_doc(const uint8_t *p, const uint8_t *end, bson_t *out, uint32_t *len)
{
    if (end - p < 5) {
        return false;
    }
    int32_t n = read_i32(p);
    if (n < 5 || n > end - p || !bson_init_static(out, p, (size_t)n)) {
        return false;
    }
    if (!bson_validate(out, BSON_VALIDATE_NONE, NULL)) {
        return false;
    }
    *len = (uint32_t)n;
    return true;
}

static bool parse_msg(fts_double_request_t *req, fts_double_error_t *err)
{
    const uint8_t *p = req->msg + 16;
    const uint8_t *end = req->msg + req->msg_len;
    if (end - p < 4) {
        return false;
    }
    req->flags = (uint32_t)read_i32(p);
    p += 4;
    if (req->flags & 1u) {
        end -= 4; /* checksumPresent: a CRC-32C we do not verify */
    }
    req->no_reply = (req->flags & 2u) != 0;
    bool have_body = false;
    while (p < end) {
        uint8_t kind = *p++;
        if (kind == 0) {
            uint32_t len;
            if (have_body || !read_doc(p, end, &req->body, &len)) {
                return false;
            }
            have_body = true;
            p += len;
        } else if (kind == 1) {
            if (end - p < 4) {
                return false;
            }
            int32_t size = read_i32(p);
            if (size < 5 || size > end - p || req->nseqs == FTS_DOUBLE_MAX_DOCSEQS) {
                return false;
            }
            const uint8_t *seq_end = p + size;
            const uint8_t *name = p + 4;
            const uint8_t *nul = memchr(name, 0, (size_t)(seq_end - name));
            if (!nul) {
                return false;
            }
            fts_double_docseq_t *seq = &req->seqs[req->nseqs++];
            seq->name = (const char *)name;
            seq->data = nul + 1;
            seq->len = (uint32_t)(seq_end - seq->data);
            /* Validate every document now, so that later code can trust them. */
            for (const uint8_t *d = seq->data; d < seq_end;) {
                bson_t doc;
                uint32_t len;
                if (!read_doc(d, seq_end, &doc, &len)) {
                    return false;
                }
                d += len;
            }
            p = seq_end;
        } else {
            return false;
        }
    }
    if (!have_body) {
        return false;
    }
    bson_iter_t it;
    if (!bson_iter_init(&it, &req->body) || !bson_iter_next(&it)) {
        return false;
    }
    req->name = bson_iter_key(&it);
    bson_value_t v;
    if (!fts_double_doc_get(&req->body, "$db", &v) || v.value_type != BSON_TYPE_UTF8) {
        req->db = bson_strdup("admin");
        return fts_double_error_set(err, FTS_DOUBLE_E_MISSING_DB,
                                    "OP_MSG requests require a $db argument");
    }
    req->db = bson_strndup(v.value.v_utf8.str, v.value.v_utf8.len);
    req->secondary_ok = false;
    bson_value_t rp;
    if (fts_double_doc_get(&req->body, "$readPreference", &rp) &&
        rp.value_type == BSON_TYPE_DOCUMENT) {
        bson_t rp_doc;
        bson_value_t mode;
        fts_double_value_as_doc(&rp, &rp_doc);
        if (fts_double_doc_get(&rp_doc, "mode", &mode) && mode.value_type == BSON_TYPE_UTF8) {
            req->secondary_ok = strcmp(mode.value.v_utf8.str, "primary") != 0;
        }
    }
    return true;
}

static bool parse_query(fts_double_request_t *req, fts_double_error_t *err)
{
    const uint8_t *p = req->msg + 16;
    const uint8_t *end = req->msg + req->msg_len;
    if (end - p < 4) {
        return false;
    }
    int32_t flags = read_i32(p);
    p += 4;
    const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
    if (!nul) {
        return false;
    }
    const char *collection = (const char *)p;
    p = nul + 1 + 8; /* numberToSkip, numberToReturn */
    uint32_t len;
    if (p > end || !read_doc(p, end, &req->body, &len)) {
        return false;
    }
    req->legacy = true;
    req->secondary_ok = (flags & 4) != 0; /* SecondaryOk flag */
    const char *dot = strchr(collection, '.');
    req->db = dot ? bson_strndup(collection, (size_t)(dot - collection)) : bson_strdup(collection);
    /* A command may be wrapped: {$query: {...}, $readPreference: ...}. */
    bson_value_t inner;
    if ((fts_double_doc_get(&req->body, "$query", &inner) ||
         fts_double_doc_get(&req->body, "query", &inner)) &&
        inner.value_type == BSON_TYPE_DOCUMENT) {
        bson_init_static(&req->body, inner.value.v_doc.data, inner.value.v_doc.data_len);
    }
    bson_iter_t it;
    if (!bson_iter_init(&it, &req->body) || !bson_iter_next(&it)) {
        req->name = "";
        return fts_double_error_set(err, FTS_DOUBLE_E_UNSUPPORTED_OP_QUERY,
                                    "Unsupported OP_QUERY command: (empty)");
    }
    req->name = bson_iter_key(&it);
    if (!dot || strcmp(dot, ".$cmd") != 0 ||
        (strcmp(req->name, "hello") != 0 && strcmp(req->name, "isMaster") != 0 &&
         strcmp(req->name, "ismaster") != 0)) {
        return fts_double_error_set(err, FTS_DOUBLE_E_UNSUPPORTED_OP_QUERY,
                                    "Unsupported OP_QUERY command: %s. The client driver may "
                                    "require an upgrade. For more details see "
                                    "https://dochub.mongodb.org/core/legacy-opcode-removal",
                                    req->name);
    }
    return true;
}

bool fts_double_wire_parse(fts_double_request_t *req, fts_double_error_t *err)
{
    err->code = 0;
    req->request_id = read_i32(req->msg + 4);
    req->opcode = read_i32(req->msg + 12);
    switch (req->opcode) {
    case FTS_DOUBLE_OP_MSG:
        return parse_msg(req, err);
    case FTS_DOUBLE_OP_QUERY:
        return parse_query(req, err);
    default:
        return false;
    }
}

void fts_double_wire_frame_reply(const fts_double_request_t *req, const bson_t *reply,
                                 int32_t reply_id, struct evbuffer *out)
{
    uint8_t header[36];
    size_t header_len;
    if (req->opcode == FTS_DOUBLE_OP_QUERY) {
        header_len = 16 + 20;
        write_i32(header + 12, FTS_DOUBLE_OP_REPLY);
        write_i32(header + 16, 0); /* responseFlags */
        memset(header + 20, 0, 8); /* cursorID */
        write_i32(header + 28, 0); /* startingFrom */
        write_i32(header + 32, 1); /* numberReturned */
    } else {
        header_len = 16 + 5;
        write_i32(header + 12, FTS_DOUBLE_OP_MSG);
        write_i32(header + 16, 0); /* flagBits */
        header[20] = 0;            /* section kind 0 */
    }
    write_i32(header, (int32_t)(header_len + reply->len));
    write_i32(header + 4, reply_id);
    write_i32(header + 8, req->request_id);
    evbuffer_add(out, header, header_len);
    evbuffer_add(out, bson_get_data(reply), reply->len);
}

bool fts_double_docs_init(fts_double_docs_t *docs, const fts_double_request_t *req,
                          const char *field)
{
    memset(docs, 0, sizeof *docs);
    for (int i = 0; i < req->nseqs; i++) {
        if (strcmp(req->seqs[i].name, field) == 0) {
            docs->from_seq = true;
            docs->present = true;
            docs->next = req->seqs[i].data;
            docs->end = req->seqs[i].data + req->seqs[i].len;
            return true;
        }
    }
    if (!bson_iter_init_find(&docs->iter, &req->body, field)) {
        return true;
    }
    docs->present = true;
    if (!BSON_ITER_HOLDS_ARRAY(&docs->iter)) {
        return false;
    }
    bson_iter_t array = docs->iter;
    return bson_iter_recurse(&array, &docs->iter);
}

bool fts_double_docs_next(fts_double_docs_t *docs, bson_t *doc, bool *bad)
{
    *bad = false;
    if (!docs->present) {
        return false;
    }
    if (docs->from_seq) {
        if (docs->next >= docs->end) {
            return false;
        }
        int32_t len = read_i32(docs->next);
        bson_init_static(doc, docs->next, (size_t)len);
        docs->next += len;
        return true;
    }
    if (!bson_iter_next(&docs->iter)) {
        return false;
    }
    if (!BSON_ITER_HOLDS_DOCUMENT(&docs->iter)) {
        *bad = true;
        return false;
    }
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(&docs->iter, &len, &data);
    bson_init_static(doc, data, len);
    return true;
}
