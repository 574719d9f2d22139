// TypedReader<T>: a Reader that hands out decoded objects — T is any type
// nlohmann::json can convert to, such as the generated kiln.dev types
// (api::v1alpha1::TrainingJob). A decoding failure is InvalidArgument naming
// the object. Thread-safe as the Reader it wraps, which must outlive it.
#ifndef KILN_RUNTIME_TYPED_READER_H_
#define KILN_RUNTIME_TYPED_READER_H_

#include <exception>
#include <string>
#include <vector>

#include "runtime/reader.h"

namespace kiln::runtime {

template <class T>
class TypedReader {
 public:
  explicit TypedReader(const Reader& reader) : reader_(reader) {}

  // As Reader::Get, decoded.
  StatusOr<T> Get(const std::string& ns, const std::string& name) const {
    KILN_ASSIGN_OR_RETURN(kube::Object obj, reader_.Get(ns, name));
    return Decode(*obj);
  }
  // As Reader::List, decoded; the first object that does not decode fails the list.
  StatusOr<std::vector<T>> List(const ListFilter& filter = {}) const {
    KILN_ASSIGN_OR_RETURN(std::vector<kube::Object> objs, reader_.List(filter));
    std::vector<T> out;
    out.reserve(objs.size());
    for (const auto& obj : objs) {
      KILN_ASSIGN_OR_RETURN(T value, Decode(*obj));
      out.push_back(std::move(value));
    }
    return out;
  }

 private:
  static StatusOr<T> Decode(const nlohmann::json& obj) {
    try {
      return obj.get<T>();
    } catch (const std::exception& e) {
      // The generated from_json functions throw api::DecodeError (a
      // std::runtime_error) naming the field; nlohmann throws its own.
      return Status::InvalidArgument(kube::Store::KeyOf(obj) + ": " + e.what());
    }
  }

  const Reader& reader_;
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_TYPED_READER_H_
