"""The preset header dictionary of container format 1 (frozen: files of format 1 keep decoding).

Format 1 had one dictionary for every codec, so it holds the typical headers of the two codecs of
that time; format 2 moved the dictionaries to the codecs (`Codec.header_dict`). Never change a
byte of it: the format-1 golden files (tests/data/*_format1.nmc) fail if it changes.
"""

HEADER_DICT = (  # two typical headers, the most frequent last (DEFLATE codes near matches cheaper)
    b'{"codec":"mcquic","coder":{"coder":"range","library":"constriction","perfect":false,"version":"0.5.0"},'
    b'"extra":{"alpha":false,"codebook_size":256,"codebooks":[4,2,2,2],"dec_margin":10,"stages":2,"stride":16,"tile":1024},'
    b'"media":{"bit_depth":8,"channels":3,"height":512,"kind":"image","width":768},"model_id":"mcquic-v1","packets":1,'
    b'"setting":"q2","weights":"'
    b'{"codec":"hificodec","coder":{"coder":"range","library":"constriction","perfect":false,"version":"0.5.0"},'
    b'"extra":{"chunk_frames":1500,"codebook_size":1024,"codebooks":4,"frames":60,"groups":2,"hop":320},'
    b'"media":{"channels":1,"coded_channels":1,"coded_frames":16000,"coded_rate":16000,"frames":16000,"kind":"audio",'
    b'"sample_rate":16000},"model_id":"hificodec-16k-v1","packets":1,"setting":"2kbps","weights":"'
)
