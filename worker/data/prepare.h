// Prepare: turns text files into token shards plus a manifest, the work of
// `kiln-worker prepare`. Inputs are read twice — once to count the documents
// and choose the validation split, once to write — so memory stays at one
// input file and one shard buffer per split however large the corpus is.
// Deterministic: the same inputs and options give byte-identical shards and
// manifest. Stateless; thread-safe (distinct outputs).
#ifndef KILN_WORKER_DATA_PREPARE_H_
#define KILN_WORKER_DATA_PREPARE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/statusor.h"
#include "worker/data/manifest.h"
#include "worker/storage/object_store.h"

namespace kiln::data {

// How an input file is split into documents.
enum class InputFormat {
  kAuto,      // Per file: fortunes when it contains a line that is just "%", else text.
  kFortunes,  // The fortune(6) format: documents separated by lines holding only "%".
  kText,      // The whole file is one document.
};

// "auto", "fortunes" or "text".
std::string_view InputFormatName(InputFormat format);
// The inverse of InputFormatName; InvalidArgument for other names.
StatusOr<InputFormat> ParseInputFormat(std::string_view name);

// kFortunes when `text` has a line that is exactly "%" (a "\r" before its
// newline allowed), else kText.
InputFormat DetectFormat(std::string_view text);

// The documents of `text` (kAuto resolves with DetectFormat). A fortunes
// document is the text between separator lines, its last newline included.
// Documents holding nothing but whitespace are dropped.
std::vector<std::string_view> SplitDocuments(std::string_view text, InputFormat format);

// The files the inputs name, in order: a file as given; a directory's regular
// files (symbolic links followed), sorted by name, not recursing and skipping
// names that start with '.' or end in ".dat" (the fortunes package's index
// files). A file reached twice (e.g. fortunes' "art.u8" link to "art") is kept
// the first time only. NotFound for a missing input, FailedPrecondition for an
// input that is neither file nor directory or a directory without files,
// PermissionDenied for an unreadable directory.
StatusOr<std::vector<std::string>> ListInputFiles(const std::vector<std::string>& inputs);

struct PrepareOptions {
  std::vector<std::string> inputs;  // Files or directories.
  std::string output_dir;           // Created when missing.
  // The share of documents that go to the validation split, in [0, 0.5].
  double val_fraction = 0.01;
  // Tokens per shard file; the last shard of a split holds the rest.
  int64_t shard_tokens = 100'000'000;
  InputFormat format = InputFormat::kAuto;
};

struct PrepareResult {
  Manifest manifest;  // As written.
  std::string manifest_path;
};

// InvalidArgument naming the first bad option: no inputs, no output folder,
// val_fraction outside [0, 0.5], shard_tokens outside [1, kMaxShardTokens].
Status ValidatePrepareOptions(const PrepareOptions& options);

// Tokenizes every document with the byte tokenizer, each followed by EOT, and
// writes output_dir/train_000000.bin, ..., val_000000.bin, ... and
// output_dir/manifest.json (written last). Shards of a previous run that the
// new manifest does not list are removed.
//
// The split is per document: the round(n * val_fraction) documents whose
// content hashes lowest (ties by position) go to val — at least one when
// val_fraction > 0 and there are two or more documents, never all of them. A
// document's side follows from its content, so adding or removing inputs moves
// only documents near the threshold.
//
// Errors — options: InvalidArgument (also for an output path that is not a
// directory); inputs: NotFound, PermissionDenied, FailedPrecondition (no
// documents at all) or DataLoss (an input changed between the two reads);
// output: Unavailable, naming the path and the system's reason.
StatusOr<PrepareResult> Prepare(const PrepareOptions& options);

// Copies the output of Prepare to `prefix` in `store` (an S3 bucket): the
// shards, then the manifest last, so a reader never finds a manifest whose
// shards are missing; then deletes shards under the prefix that the
// manifest does not name. Unavailable (exit 3) when the store cannot be
// written, unless its error says more (PermissionDenied, NotFound).
Status UploadPrepared(const PrepareResult& result, storage::ObjectStore& store, std::string prefix);

}  // namespace kiln::data

#endif  // KILN_WORKER_DATA_PREPARE_H_
