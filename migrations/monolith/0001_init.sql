-- The legacy monolith's schema: people, tasks, documents.
-- Lives in the database's `public` schema, as a monolith's tables usually do; ficus's own
-- objects never go there (they live in schema `ficus`).

CREATE TYPE person_role AS ENUM ('admin', 'member');

CREATE TABLE people (
    id            bigserial PRIMARY KEY,
    email         text        NOT NULL UNIQUE,
    display_name  text        NOT NULL,
    role          person_role NOT NULL DEFAULT 'member',
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE task_status AS ENUM ('todo', 'in_progress', 'done');

CREATE TABLE tasks (
    id          bigserial PRIMARY KEY,
    title       text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    status      task_status NOT NULL DEFAULT 'todo',
    assignee_id bigint      REFERENCES people (id) ON DELETE SET NULL,
    due_on      date,
    tags        text[]      NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX tasks_assignee_id_idx ON tasks (assignee_id);
CREATE INDEX tasks_status_idx ON tasks (status);

CREATE TABLE documents (
    id           uuid PRIMARY KEY,
    name         text        NOT NULL,
    content_type text        NOT NULL,
    size_bytes   bigint      NOT NULL,
    sha256       text        NOT NULL,
    owner_id     bigint      REFERENCES people (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A document's bytes, in order; written in one transaction with the document row.
CREATE TABLE document_chunks (
    document_id uuid    NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    data        bytea   NOT NULL,
    PRIMARY KEY (document_id, seq)
);
